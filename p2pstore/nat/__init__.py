"""NAT traversal: reachability, hole punching, relays, port mapping (docs/nat.md, docs/relay.md)."""
