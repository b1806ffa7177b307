"""A small share's bytes, put together for one ``storage.put`` (sender.py)."""

from __future__ import annotations

from collections.abc import Sequence

from p2pstore.immutable import ShareTrailer

#: one queued block: (segment index, share offset, block)
Block = tuple[int, int, bytes]


def whole_share(blocks: Sequence[Block], trailer: ShareTrailer) -> bytes:
    """A share's bytes from its header, blocks and trailer, which must tile it exactly
    (RuntimeError otherwise: the writer's share fails, as a failed write would)."""
    out = bytearray(trailer.header)
    for _, offset, data in blocks:
        if offset != len(out):
            raise RuntimeError(f"block at {offset}, expected {len(out)}")
        out += data
    if trailer.trailer_offset != len(out):
        raise RuntimeError(f"trailer at {trailer.trailer_offset}, expected {len(out)}")
    out += trailer.trailer
    if len(out) != trailer.share_length:
        raise RuntimeError(f"share of {len(out)} bytes, expected {trailer.share_length}")
    return bytes(out)
