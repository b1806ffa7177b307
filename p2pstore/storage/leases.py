"""Lease records and their CBOR file format (sans-I/O).

A lease says "owner wants the shares of this storage index kept until ``expires``".
Owners are node IDs authenticated by the transport (no renew/cancel secrets: the
QUIC handshake already proves who the caller is), so only the node that added a
lease can renew or cancel it. Leases cover every share of one storage index on
this server.

File format (one file per storage index, ``shares/<p>/<si>/leases``), CBOR::

    {"v": 1, "leases": [{"owner": <20 bytes>, "expires": <float, unix seconds>}, ...]}

Invariants: owners are unique and exactly 20 bytes; expiry times are finite;
at most ``limit`` entries are decoded (a larger file is rejected as corrupt).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cbor2

from quic_transport.identity import ID_BYTES

LEASE_FORMAT_VERSION = 1
# Owner used for grace leases the server writes when a lease file is missing or
# corrupt; no peer can have this ID's key, so nobody can renew or cancel it.
SERVER_OWNER = bytes(ID_BYTES)


class LeaseFileError(ValueError):
    """A lease file does not decode to the documented format."""


@dataclass(frozen=True, slots=True)
class Lease:
    owner: bytes
    expires: float

    def __post_init__(self) -> None:
        if not isinstance(self.owner, bytes) or len(self.owner) != ID_BYTES:
            raise LeaseFileError(f"lease owner must be {ID_BYTES} bytes")
        if (
            not isinstance(self.expires, float | int)
            or isinstance(self.expires, bool)
            or not math.isfinite(self.expires)
        ):
            raise LeaseFileError("lease expiry must be a finite number")

    def live(self, now: float) -> bool:
        return self.expires > now


def encode_leases(leases: list[Lease]) -> bytes:
    return cbor2.dumps(
        {
            "v": LEASE_FORMAT_VERSION,
            "leases": [{"owner": le.owner, "expires": float(le.expires)} for le in leases],
        }
    )


def decode_leases(data: bytes, *, limit: int) -> list[Lease]:
    try:
        obj = cbor2.loads(data)
    except Exception as e:  # cbor2 raises several types on malformed input
        raise LeaseFileError(f"not CBOR: {e}") from None
    if not isinstance(obj, dict) or obj.get("v") != LEASE_FORMAT_VERSION:
        raise LeaseFileError("not a version-1 lease file")
    items = obj.get("leases")
    if not isinstance(items, list) or len(items) > limit:
        raise LeaseFileError("lease list missing or too long")
    out: list[Lease] = []
    seen: set[bytes] = set()
    for item in items:
        if not isinstance(item, dict) or set(item) != {"owner", "expires"}:
            raise LeaseFileError("malformed lease entry")
        expires = item["expires"]
        if not isinstance(expires, float | int) or isinstance(expires, bool):
            raise LeaseFileError("lease expiry must be a number")
        try:
            value = float(expires)
        except OverflowError:
            raise LeaseFileError("lease expiry out of range") from None
        lease = Lease(item["owner"], value)
        if lease.owner in seen:
            raise LeaseFileError("duplicate lease owner")
        seen.add(lease.owner)
        out.append(lease)
    return out


#: the owner of the shared lease that holds the time of owners beyond
#: ``max_leases_per_index`` (lease_store.py); no node ID is all zero bytes
OVERFLOW_OWNER = bytes(ID_BYTES)


def upsert(leases: list[Lease], owner: bytes, expires: float) -> list[Lease]:
    """Leases with ``owner``'s expiry set to the later of its current one and ``expires``."""
    out = []
    found = False
    for le in leases:
        if le.owner == owner:
            out.append(Lease(owner, max(le.expires, expires)))
            found = True
        else:
            out.append(le)
    if not found:
        out.append(Lease(owner, expires))
    return out
