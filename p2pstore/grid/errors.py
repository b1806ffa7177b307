"""Exceptions of the grid layer (upload, download, check/verify/repair).

Invariants (docs/architecture.md, "Conventions"):
- :class:`GridError` is the one base. :class:`GridLocalError` means the caller is at
  fault (bad parameters, API misuse); :class:`GridRemoteError` means the grid could
  not do the job (too few peers accepted shares, too few good shares found).
- Every remote failure carries structured fields, so a CLI, shell or web page can say
  exactly what happened without parsing the message: an :class:`UploadError` says
  how many shares were placed where and why each other share failed; a
  :class:`DownloadError` says how many good shares were found, how many are needed
  and on which peers they were.
- Peers appear by their base32 node ID (public); no key material is ever included.
"""

from __future__ import annotations

from collections.abc import Mapping


class GridError(Exception):
    """Base of every error raised by :mod:`p2pstore.grid`."""


class GridLocalError(GridError, ValueError):
    """The caller supplied something invalid (parameters, a cap of the wrong kind)."""


class FileShrank(GridLocalError):
    """A local file being uploaded ended before its size (it changed meanwhile)."""


class GridRemoteError(GridError):
    """The grid could not complete the operation."""


def _fmt_where(where: Mapping[str, tuple[int, ...]]) -> str:
    if not where:
        return "none"
    return ", ".join(f"{peer[:8]}:{list(shares)}" for peer, shares in sorted(where.items()))


class UploadError(GridRemoteError):
    """Fewer than ``happy`` distinct peers ended up holding shares.

    ``placed`` maps share number -> base32 peer ID of every share that is stored
    (sent now or found already present); ``happiness`` is the number of distinct
    peers that hold distinct shares (a maximum matching, docs/grid.md);
    ``reasons`` maps every share that is not placed to why (the last failure of each
    peer tried, or "no peer left to try"); ``peers_found`` is how many storage peers
    the lookup returned; ``peer_failures`` maps base32 peer ID -> why a peer could
    not be used at all (it did not answer the share listing).
    """

    def __init__(
        self,
        *,
        placed: Mapping[int, str],
        happiness: int,
        happy: int,
        reasons: Mapping[int, str],
        peers_found: int,
        peer_failures: Mapping[str, str] | None = None,
        live: int | None = None,
    ) -> None:
        self.placed = dict(placed)
        self.live = live  # set when too few storage peers answered to try at all
        self.peer_failures = dict(peer_failures or {})
        self.happiness = happiness
        self.happy = happy
        self.reasons = dict(reasons)
        self.peers_found = peers_found
        failed = "; ".join(f"share {s}: {r}" for s, r in sorted(self.reasons.items()))
        if self.peer_failures:
            failed += "; unreachable peers: " + ", ".join(
                f"{p[:8]}: {r}" for p, r in sorted(self.peer_failures.items())
            )
        if live is not None:
            # nothing was tried: one readable line (the per-share reasons add nothing)
            dead = f" ({len(self.peer_failures)} more did not answer)" if self.peer_failures else ""
            super().__init__(
                f"upload failed: {live} storage peers are live{dead}, but shares_happy = "
                f"{happy} needs {happy} distinct peers; lower shares_happy or wait for "
                "more peers to join"
            )
            return
        super().__init__(
            f"upload failed: shares could be placed on only {happiness} distinct peers, "
            f"need {happy} (shares_happy; {len(self.placed)} of {len(self.placed) + len(reasons)} "
            f"shares stored, {peers_found} storage peers found)" + (f"; {failed}" if failed else "")
        )


class DownloadError(GridRemoteError):
    """Fewer than ``need`` good shares could be found.

    ``found`` is the number of distinct good shares, ``where`` maps base32 peer ID ->
    the good share numbers it holds, ``bad`` maps ``"peer/share"`` -> why that copy
    was rejected (corrupt, timed out, vanished), ``peers_asked`` how many peers were
    asked, ``segment`` the segment being fetched when it gave up (None while
    locating shares).
    """

    def __init__(
        self,
        *,
        found: int,
        need: int,
        where: Mapping[str, tuple[int, ...]],
        bad: Mapping[str, str] | None = None,
        peers_asked: int = 0,
        segment: int | None = None,
    ) -> None:
        self.found = found
        self.need = need
        self.where = dict(where)
        self.bad = dict(bad or {})
        self.peers_asked = peers_asked
        self.segment = segment
        at = "" if segment is None else f" at segment {segment}"
        bad_txt = "; ".join(f"{k}: {v}" for k, v in sorted(self.bad.items())[:16])
        super().__init__(
            f"download failed{at}: found {found} good shares, need {need} "
            f"(asked {peers_asked} peers; good shares on: {_fmt_where(self.where)})"
            + (f"; rejected: {bad_txt}" if bad_txt else "")
        )


class RepairError(GridRemoteError):
    """Repair could not regenerate or place the missing shares; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"repair failed: {reason}")
        self.reason = reason
