"""The base every layer of ``p2pstore`` may import: file-system helpers
(:mod:`.fsutil`), background tasks and timeouts (:mod:`.tasks`), and the text the
front ends show (:mod:`.progress`, :mod:`.reports`). Nothing here imports another
p2pstore package, the transport or the DHT (docs/architecture.md).
"""
