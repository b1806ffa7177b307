"""A decoding budget for CBOR from the network, checked before decoding (sans-I/O).

cbor2 builds one Python object per data item, and an item can cost one byte on the
wire while its object costs 50-100 bytes: a 1 MiB array of empty maps decoded to
about 75 MB and took half a second of the event loop. :func:`check_structure`
walks the encoding without building anything and refuses, before cbor2 sees it, a
message with more than ``max_items`` data items, nesting deeper than
``max_depth``, a declared length running past the end, indefinite lengths (cbor2
never writes them), tags other than bignums (2, 3: value sharing and the like
could make a small message a large object graph), or simple values other than
false, true, null and undefined. So a decoded message holds at most
``max_items`` objects (:data:`MAX_ITEMS`, about 1.6 MB at most, whatever the
wire size), and the walk itself stops after ``max_items`` steps.

Every message the protocol sends stays far below the budget (the largest, a DHT
reply with contacts and announcements, holds a few hundred items).
"""

from __future__ import annotations

from .errors import FrameError

MAX_ITEMS = 16_384
MAX_DEPTH = 32
MAX_BIGNUM_BYTES = 64


class DecodeBudgetExceeded(FrameError):
    """The message is over the decoding budget: the peer is hostile or broken."""


def check_structure(data: bytes, *, max_items: int = MAX_ITEMS, max_depth: int = MAX_DEPTH) -> None:
    """Raise :class:`DecodeBudgetExceeded` (or FrameError for plain malformation)
    unless ``data`` is exactly one CBOR item within the budget."""
    n = len(data)
    pos = 0
    items = 0
    stack = [1]  # items still to read in each open container; the top level holds one
    bignum = False  # the next item is the content of a bignum tag
    while stack:
        if stack[-1] == 0:
            stack.pop()
            continue
        if pos >= n:
            raise FrameError("CBOR truncated")
        ib = data[pos]
        pos += 1
        stack[-1] -= 1
        items += 1
        if items > max_items:
            raise DecodeBudgetExceeded(f"CBOR message has more than {max_items} items")
        major, ai = ib >> 5, ib & 0x1F
        if ai < 24:
            arg = ai
        elif ai <= 27:
            size = 1 << (ai - 24)
            if pos + size > n:
                raise FrameError("CBOR truncated")
            arg = int.from_bytes(data[pos : pos + size], "big")
            pos += size
        elif ai == 31:
            if 2 <= major <= 5:
                raise DecodeBudgetExceeded("indefinite-length CBOR items are not allowed")
            raise FrameError("malformed CBOR: unexpected break or indefinite item")
        else:
            raise FrameError("reserved CBOR additional information")
        if bignum:
            bignum = False
            if major != 2 or arg > MAX_BIGNUM_BYTES:
                raise DecodeBudgetExceeded("a bignum must be a short byte string")
        if major <= 1:  # unsigned / negative integer
            continue
        if major <= 3:  # byte / text string
            if arg > n - pos:
                raise FrameError("CBOR string runs past the end")
            pos += arg
            continue
        if major <= 5:  # array / map
            count = arg * 2 if major == 5 else arg
            if count > n - pos:  # every item takes at least one byte
                raise FrameError("CBOR container runs past the end")
            if len(stack) > max_depth:
                raise DecodeBudgetExceeded(f"CBOR nested deeper than {max_depth}")
            stack.append(count)
            continue
        if major == 6:  # tag
            if arg not in (2, 3):
                raise DecodeBudgetExceeded(f"CBOR tag {arg} is not allowed")
            bignum = True
            stack.append(1)
            continue
        # major 7: simple values and floats
        if ai in (20, 21, 22, 23, 25, 26, 27):
            continue
        raise DecodeBudgetExceeded("CBOR simple value not allowed")
    if pos != n:
        raise FrameError("trailing bytes after the CBOR message")
