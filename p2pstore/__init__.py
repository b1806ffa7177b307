"""The storage grid: caps, encoding, upload, download, storage server, placement, vdrive,
node assembly, CLI and web/HTTP API."""

__version__ = "0.1.0"
