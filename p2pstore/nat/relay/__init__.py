"""Relays for peers behind NATs that cannot be punched (docs/relay.md):
``service`` (the relay a public node runs), ``client`` (reservations a private node
holds), ``wire`` (the relay messages), ``limits`` (sans-I/O accounting: reservations,
circuits, bytes, rate, amplification), ``work`` (the reservation's proof of work),
``errors`` (:class:`~p2pstore.nat.relay.errors.RelayError` and its Local/Remote
split, under :class:`~p2pstore.nat.errors.NatError`).
"""
