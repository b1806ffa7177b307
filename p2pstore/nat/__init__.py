"""NAT traversal for p2pstore nodes (docs/nat.md): the connectivity layer.

Modules, in dependency order: ``errors`` (the exception root), ``peer_record`` (the
signed peer record), ``tracker`` (sans-I/O reachability decision), ``reachability``
(``nat.dialback`` / ``nat.probe`` RPCs and the checker), ``punch`` (``nat.connect``
/ ``nat.punch`` rendezvous), ``connector`` (dial a peer directly, punched or
relayed), ``glue`` (the Protocols of the DHT and port mapper the manager drives),
``manager`` (the node-side wiring used by GridService). These stay flat: each is
one concept with its own name, no family shares a prefix. Sub-packages: ``relay/``
(relay service and client, docs/relay.md) and ``portmap/`` (port mapping on the
router, docs/portmap.md). One exception root:
:class:`~p2pstore.nat.errors.NatError`.
"""
