"""Kademlia DHT over the QUIC transport: routing table, iterative lookups, signed records."""
