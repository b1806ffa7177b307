"""NAT traversal: reachability, hole punching, relays and port mapping (issue #10)."""
