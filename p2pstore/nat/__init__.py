"""NAT traversal for p2pstore nodes (docs/nat.md).

Modules, in dependency order: ``errors`` (exception base), ``record`` (the signed
peer record), ``tracker`` (sans-I/O reachability decision), ``reachability``
(``nat.dialback`` / ``nat.probe`` RPCs and the checker), ``punch`` (``nat.connect``
/ ``nat.punch`` rendezvous), ``connector`` (dial a peer directly, punched or
relayed), ``manager`` (the node-side wiring used by GridService). Relay
(``relay*``) and port mapping (``portmap*``) modules live here too.
"""
