"""NAT traversal for p2pstore nodes (docs/nat.md).

Modules, in dependency order: ``errors`` (exception base), ``record`` (the signed
peer record), ``tracker`` (sans-I/O reachability decision), ``reachability``
(``nat.dialback`` / ``nat.probe`` RPCs and the checker), ``punch`` (``nat.connect``
/ ``nat.punch`` rendezvous), ``connector`` (dial a peer directly, punched or
relayed), ``glue`` (the Protocols of the DHT and port mapper it drives),
``manager`` (the node-side wiring used by GridService). Sub-packages: ``relay/``
(relay service and client) and ``portmap/`` (port mapping on the router). One
exception root: :class:`~p2pstore.nat.errors.NatError`.
"""
