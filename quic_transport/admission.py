"""Admission of new connections on the listening side: which Initials get state.

An Initial gets connection state only if it is a well-formed QUIC v1 Initial of
at least 1,200 bytes (RFC 9000 section 14.1) and either the listener has room to
spare or the caller proved its address with a Retry token (section 8.1.2).
Once ``pressure_at`` connections are live, token-less Initials are answered with
a Retry (aioquic's token handler: AES-GCM sealed address and connection IDs,
30 s lifetime) and forgotten.

Invariant: no state is kept for an Initial that is refused or answered with a
Retry; a token is only accepted from the address it was issued to (virtual
relay paths are bound through ``paths.token_address``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aioquic.quic.packet import QuicHeader, QuicPacketType, encode_quic_retry
from aioquic.quic.retry import QuicRetryTokenHandler

from .paths import token_address


@dataclass(frozen=True, slots=True)
class Admitted:
    original_dcid: bytes  # the DCID of the caller's first Initial
    retry_source: bytes | None  # our Retry's source CID, if the caller went through one


class Admission:
    def __init__(
        self,
        *,
        versions: list[int],
        cid_length: int,
        send: Callable[[bytes, tuple[str, int]], object],
        clock: Callable[[], float],
    ) -> None:
        self._versions = versions
        self._cid_length = cid_length
        self._send = send
        self._clock = clock
        self._tokens = QuicRetryTokenHandler()
        self.retries = 0

    def admit(
        self, data: bytes, header: QuicHeader, addr: Any, *, under_pressure: bool
    ) -> Admitted | None:
        """Admitted (create a connection) or None (keep nothing; a Retry may be sent)."""
        if (
            header.packet_type != QuicPacketType.INITIAL
            or len(data) < 1200
            or header.version not in self._versions
        ):
            return None
        if header.token:
            try:
                original = self._tokens.validate_token(
                    address=token_address(addr),
                    destination_cid=header.destination_cid,
                    token=header.token,
                    now=self._clock(),
                )
            except ValueError:
                return None
            return Admitted(original, header.destination_cid)
        if not under_pressure:
            return Admitted(header.destination_cid, None)
        source = os.urandom(self._cid_length)
        token = self._tokens.create_token(
            address=token_address(addr),
            original_destination_connection_id=header.destination_cid,
            retry_source_connection_id=source,
            now=self._clock(),
        )
        assert header.version is not None
        self._send(
            encode_quic_retry(
                version=header.version,
                source_cid=source,
                destination_cid=header.source_cid,
                original_destination_cid=header.destination_cid,
                retry_token=token,
            ),
            (addr[0], addr[1]),
        )
        self.retries += 1
        return None
