"""The base every layer may import: file-system helpers (:mod:`.fsutil`) and the
progress formatting of the front ends (:mod:`.progress`). Nothing here imports
another p2pstore package, the transport or the DHT (docs/architecture.md).
"""
