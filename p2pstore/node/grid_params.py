"""The grid's recommended encoding, carried by its bootstrap list (docs/bootstrap.md,
"Grid parameters"):

    p2ps-params <k> <N> <happy> <signature>   [# label]

signed by the vdrive node's key (the ``p2ps-vdrive`` key of the same list) over
``b"p2ps-params-v1\\0" + k, N, happy`` (three big-endian 16-bit integers). A node
whose ``[client]`` section sets none of ``shares_needed``, ``shares_total`` and
``shares_happy`` uploads with these (:func:`effective_encoding`).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from quic_transport.identity import (
    SIGNATURE_BYTES,
    IdentityError,
    NodeKey,
    b32decode,
    b32encode,
    verify_signature,
)

from .config import ENCODING_KEYS, NodeConfig

PARAMS_KEYWORD = "p2ps-params"
_DOMAIN = b"p2ps-params-v1\0"
MAX_SHARES = 256


def check_encoding(k: int, n: int, happy: int) -> None:
    """Raises ValueError naming what is wrong."""
    if not 1 <= k <= n <= MAX_SHARES:
        raise ValueError(f"need 1 <= k <= N <= {MAX_SHARES}, got k={k} N={n}")
    if not k <= happy <= n:
        raise ValueError(f"need k <= happy <= N, got happy={happy}")


@dataclass(frozen=True, slots=True)
class GridParams:
    k: int
    n: int
    happy: int
    signature: bytes
    label: str = ""

    def __post_init__(self) -> None:
        check_encoding(self.k, self.n, self.happy)
        if len(self.signature) != SIGNATURE_BYTES:
            raise ValueError(f"signature must be {SIGNATURE_BYTES} bytes")

    @staticmethod
    def message(k: int, n: int, happy: int) -> bytes:
        return _DOMAIN + struct.pack(">HHH", k, n, happy)

    @classmethod
    def signed(cls, k: int, n: int, happy: int, key: NodeKey, label: str = "grid") -> GridParams:
        return cls(k, n, happy, key.sign(cls.message(k, n, happy)), label)

    def signed_by(self, public_key: bytes) -> bool:
        return verify_signature(
            public_key, self.message(self.k, self.n, self.happy), self.signature
        )

    def to_words(self) -> str:
        return f"{PARAMS_KEYWORD} {self.k} {self.n} {self.happy} {b32encode(self.signature)}"

    @classmethod
    def from_words(cls, words: list[str], label: str) -> GridParams:
        """``words`` after the keyword; raises ValueError naming what is wrong."""
        if len(words) != 4:
            form = f"{PARAMS_KEYWORD} <k> <N> <happy> <signature>"
            raise ValueError(f"expected '{form}', got {len(words) + 1} words")
        try:
            k, n, happy = (int(w, 10) for w in words[:3])
        except ValueError:
            raise ValueError("k, N and happy must be whole numbers") from None
        check_encoding(k, n, happy)
        try:
            sig = b32decode(words[3].lower(), expected_len=SIGNATURE_BYTES, what="signature")
        except IdentityError as e:
            raise ValueError(str(e)) from None
        return cls(k, n, happy, sig, label)


@dataclass(frozen=True, slots=True)
class Encoding:
    """What this node uploads with, and where that came from (shown by ``status``)."""

    k: int
    n: int
    happy: int
    source: str  # "config", "grid" or "default"

    def describe(self) -> str:
        where = {
            "config": "this node's [client] settings",
            "grid": "the grid's p2ps-params line",
            "default": "built-in defaults",
        }[self.source]
        return f"{self.k}-of-{self.n}, happy {self.happy} ({where})"


def effective_encoding(config: NodeConfig, params: GridParams | None) -> Encoding:
    """The node's own ``[client]`` encoding if it sets any of the three keys, else
    the grid's (its bootstrap list's verified ``p2ps-params``), else the defaults."""
    c = config.client
    if c.explicit & set(ENCODING_KEYS):
        return Encoding(c.shares_needed, c.shares_total, c.shares_happy, "config")
    if params is not None:
        return Encoding(params.k, params.n, params.happy, "grid")
    return Encoding(c.shares_needed, c.shares_total, c.shares_happy, "default")
