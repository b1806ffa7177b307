"""The application layer: the operations every front end uses (upload, download,
info, check/verify/repair, status, peers and the drive operations), their result
types (:mod:`.contract`), their errors (:mod:`.errors`) and drive paths
(:mod:`.vpath`), written once over the grid (:mod:`.grid`) and the vdrive
(:mod:`.drive`). The HTTP API, the web UI, the shell and the CLI are adapters
over it (docs/architecture.md).

This ``__init__`` imports nothing, so importing the contract does not load the
grid.
"""
