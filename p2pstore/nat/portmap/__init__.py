"""Port mapping on the home router (docs/portmap.md): ``mapper`` (the
:class:`~p2pstore.nat.portmap.mapper.PortMapper` a node runs), ``clients`` (the
PCP, NAT-PMP and UPnP clients on the wire), ``pmp`` and ``upnp`` (their sans-I/O
message codecs), ``route`` (finding the default gateway), ``errors``
(:class:`~p2pstore.nat.portmap.errors.PortmapError` and its Local/Remote split,
under :class:`~p2pstore.nat.errors.NatError`).
"""
