"""Bootstrap lists: the plain-text seed lists people paste into chats (``docs/bootstrap.md``).

A list is lines of text. Each meaningful line is one entry::

    p2ps-seed <node-id, 32 base32 chars> <host>:<port>  [# label]
    p2ps-vdrive <Ed25519 public key, 52 base32 chars>   [# label]
    p2ps-params <k> <N> <happy> <signature>             [# label]

``#`` starts a comment (a whole-line comment, or a label after an entry), blank lines
are ignored, IPv6 hosts go in brackets.

Invariants:
- Parsing is total and bounded: any text either gives a :class:`BootstrapList` or
  raises :class:`BootstrapErrors` listing every bad line by number; text longer than
  ``MAX_TEXT_CHARS``, lines longer than ``MAX_LINE_CHARS`` and lists longer than
  ``MAX_SEEDS`` are refused before any per-entry work.
- A list holds at most one seed per node ID, at most one vdrive key and at most one
  ``p2ps-params`` line, which must be signed by that vdrive key.
- ``parse_bootstrap(lst.to_text()) == lst`` for every list (property-tested).
- Merging never loses a seed: an incoming seed with a known node ID replaces the
  address (and label, if it has one), a new node ID is appended, and a different
  vdrive key is never applied silently.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from quic_transport.identity import IdentityError, NodeId, b32decode, b32encode

from .address import HostPort, format_host_port, parse_host_port
from .errors import AddressError, BootstrapError, BootstrapErrors
from .grid_params import PARAMS_KEYWORD, GridParams

SEED_KEYWORD = "p2ps-seed"
VDRIVE_KEYWORD = "p2ps-vdrive"
MAX_LINE_CHARS = 1024
MAX_LABEL_CHARS = 200
MAX_SEEDS = 1000
MAX_TEXT_CHARS = 512 * 1024
VDRIVE_KEY_BYTES = 32
HEADER = (
    "# p2pstore bootstrap list (docs/bootstrap.md). One entry per line:\n"
    "#   p2ps-seed <node-id> <host>:<port>   a node to join the grid through\n"
    "#   p2ps-vdrive <public-key> [<read-secret>]  the grid's vdrive node key\n"
    "#   p2ps-params <k> <N> <happy> <signature>  the grid's encoding, signed by it\n"
)


def _check_label(label: str) -> None:
    if len(label) > MAX_LABEL_CHARS:
        raise ValueError(f"label is {len(label)} characters, at most {MAX_LABEL_CHARS}")
    if label != label.strip() or any(not c.isprintable() for c in label):
        raise ValueError("label must be printable text without surrounding spaces")


def _with_label(line: str, label: str) -> str:
    return f"{line}  # {label}" if label else line


@dataclass(frozen=True, slots=True)
class Seed:
    """One seed: dial ``host:port`` and require the peer to prove ``node_id``."""

    node_id: NodeId
    host: str
    port: int
    label: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.node_id, NodeId):
            raise TypeError("Seed.node_id must be a NodeId")
        HostPort(self.host, self.port)  # validates host and port range
        if self.port == 0:
            raise AddressError("a seed's port cannot be 0")
        _check_label(self.label)

    @property
    def address(self) -> HostPort:
        return HostPort(self.host, self.port)

    def same_address(self, other: Seed) -> bool:
        return (self.host, self.port) == (other.host, other.port)

    def to_line(self) -> str:
        addr = format_host_port(self.host, self.port)
        return _with_label(f"{SEED_KEYWORD} {self.node_id.b32} {addr}", self.label)


@dataclass(frozen=True, slots=True)
class VdriveKey:
    """The public key of the grid's vdrive node and, optionally, the shared drive's
    read secret (docs/vdrive.md: whoever holds the list can read the namespace)."""

    public_key: bytes
    label: str = ""
    read_secret: bytes | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.public_key, bytes) or len(self.public_key) != VDRIVE_KEY_BYTES:
            raise ValueError(f"vdrive public key must be {VDRIVE_KEY_BYTES} bytes")
        if self.read_secret is not None and (
            not isinstance(self.read_secret, bytes) or len(self.read_secret) != VDRIVE_KEY_BYTES
        ):
            raise ValueError(f"vdrive read secret must be {VDRIVE_KEY_BYTES} bytes")
        _check_label(self.label)

    @property
    def b32(self) -> str:
        return b32encode(self.public_key)

    def same(self, other: VdriveKey) -> bool:
        return (self.public_key, self.read_secret) == (other.public_key, other.read_secret)

    def __repr__(self) -> str:  # the read secret stays out of logs
        return f"VdriveKey({self.b32[:8]}..., read_secret={self.read_secret is not None})"

    def to_line(self) -> str:
        words = f"{VDRIVE_KEYWORD} {self.b32}"
        if self.read_secret is not None:
            words += " " + b32encode(self.read_secret)
        return _with_label(words, self.label)


@dataclass(frozen=True, slots=True)
class ParamsLine:
    """A ``p2ps-params`` entry (:class:`~.grid_params.GridParams`) as a list holds it."""

    params: GridParams

    @property
    def label(self) -> str:
        return self.params.label

    def to_line(self) -> str:
        return _with_label(self.params.to_words(), self.params.label)


Entry = Seed | VdriveKey | ParamsLine


@dataclass(frozen=True, slots=True)
class BootstrapList:
    """Seeds in file order (unique node IDs) and an optional vdrive key."""

    seeds: tuple[Seed, ...] = ()
    vdrive: VdriveKey | None = None
    params: GridParams | None = None  # verified against ``vdrive`` when parsed

    def __post_init__(self) -> None:
        if len(self.seeds) > MAX_SEEDS:
            raise ValueError(f"{len(self.seeds)} seeds, at most {MAX_SEEDS} allowed")
        ids = [s.node_id for s in self.seeds]
        if len(set(ids)) != len(ids):
            raise ValueError("a bootstrap list holds at most one seed per node ID")

    def seed_for(self, node_id: NodeId) -> Seed | None:
        return next((s for s in self.seeds if s.node_id == node_id), None)

    def to_text(self, *, header: bool = True) -> str:
        lines = [s.to_line() for s in self.seeds]
        if self.vdrive is not None:
            lines.append(self.vdrive.to_line())
        if self.params is not None:
            lines.append(ParamsLine(self.params).to_line())
        body = "".join(line + "\n" for line in lines)
        return (HEADER + body) if header else body

    def __len__(self) -> int:
        return len(self.seeds)


_INVISIBLE = dict.fromkeys(map(ord, "\ufeff\u200b\u200c\u200d\u2060"))


def _clean(raw: str) -> str:
    """Undo what chat programs do to pasted lines: byte-order marks and zero-width
    spaces, quote markers, backticks, odd spaces."""
    line = raw.translate(_INVISIBLE).strip()
    while line.startswith(">"):
        line = line[1:].lstrip()
    if len(line) >= 2 and line.startswith("`") and line.endswith("`"):
        line = line.strip("`").strip()
    return line


def parse_line(raw: str, *, source: str = "bootstrap text", line_no: int = 0) -> Entry | None:
    """One line to an entry, or ``None`` for a blank or comment line."""

    def bad(problem: str) -> BootstrapError:
        return BootstrapError(source, line_no, problem)

    if len(raw) > MAX_LINE_CHARS:
        raise bad(f"line is {len(raw)} characters, at most {MAX_LINE_CHARS} allowed")
    line = _clean(raw)
    content, hash_sign, comment = line.partition("#")
    label = comment.strip() if hash_sign else ""
    label = "".join(c if c.isprintable() else " " for c in label)[:MAX_LABEL_CHARS].strip()
    words = content.split()
    if not words:
        return None
    keyword = words[0].lower()
    if keyword == SEED_KEYWORD:
        if len(words) != 3:
            raise bad(f"expected '{SEED_KEYWORD} <node-id> <host>:<port>', got {len(words)} words")
        try:
            node_id = NodeId.from_b32(words[1].lower())
        except IdentityError as e:
            raise bad(str(e)) from None
        try:
            hp = parse_host_port(words[2], allow_port_zero=False)
        except AddressError as e:
            raise bad(f"address: {e}") from None
        return Seed(node_id, hp.host, hp.port, label)
    if keyword == VDRIVE_KEYWORD:
        if len(words) not in (2, 3):
            raise bad(
                f"expected '{VDRIVE_KEYWORD} <public-key> [<read-secret>]', got {len(words)} words"
            )
        try:
            key = b32decode(words[1].lower(), expected_len=VDRIVE_KEY_BYTES, what="vdrive key")
            secret = None
            if len(words) == 3:
                secret = b32decode(
                    words[2].lower(), expected_len=VDRIVE_KEY_BYTES, what="vdrive read secret"
                )
        except IdentityError as e:
            raise bad(str(e)) from None
        return VdriveKey(key, label, secret)
    if keyword == PARAMS_KEYWORD:
        try:
            return ParamsLine(GridParams.from_words(words[1:], label))
        except ValueError as e:
            raise bad(f"{PARAMS_KEYWORD}: {e}") from None
    shown = words[0] if len(words[0]) <= 40 else words[0][:40] + "..."
    if keyword.startswith("p2ps-"):
        raise bad(
            f"unknown entry type {shown!r} (known: {SEED_KEYWORD}, {VDRIVE_KEYWORD}, "
            f"{PARAMS_KEYWORD})"
        )
    raise bad(
        f"expected a line starting with {SEED_KEYWORD} or {VDRIVE_KEYWORD} "
        f"(or '#' for a comment), got {shown!r}"
    )


@dataclass(frozen=True, slots=True)
class _Located:
    line_no: int
    entry: Entry


def _parse_located(text: str, source: str) -> list[_Located]:
    if len(text) > MAX_TEXT_CHARS:
        raise BootstrapErrors(
            [BootstrapError(source, 0, f"text is {len(text)} characters, at most {MAX_TEXT_CHARS}")]
        )
    errors: list[BootstrapError] = []
    located: list[_Located] = []
    first_seen: dict[NodeId, _Located] = {}
    vdrive_at: _Located | None = None
    params_at: _Located | None = None
    for line_no, raw in enumerate(text.splitlines(), start=1):
        try:
            entry = parse_line(raw, source=source, line_no=line_no)
        except BootstrapError as e:
            errors.append(e)
            continue
        if entry is None:
            continue
        here = _Located(line_no, entry)
        if isinstance(entry, Seed):
            prev = first_seen.get(entry.node_id)
            if prev is not None:
                assert isinstance(prev.entry, Seed)
                if not prev.entry.same_address(entry):
                    errors.append(
                        BootstrapError(
                            source,
                            line_no,
                            f"node ID {entry.node_id.short()}... is already on line "
                            f"{prev.line_no} with a different address",
                        )
                    )
                continue  # an exact repeat is harmless: keep the first
            if len(first_seen) >= MAX_SEEDS:
                errors.append(BootstrapError(source, line_no, f"more than {MAX_SEEDS} seeds"))
                break
            first_seen[entry.node_id] = here
        elif isinstance(entry, ParamsLine):
            if params_at is not None:
                assert isinstance(params_at.entry, ParamsLine)
                if params_at.entry.params != entry.params:
                    errors.append(
                        BootstrapError(
                            source,
                            line_no,
                            f"a different {PARAMS_KEYWORD} line is already on line "
                            f"{params_at.line_no}",
                        )
                    )
                continue
            params_at = here
        else:
            if vdrive_at is not None:
                assert isinstance(vdrive_at.entry, VdriveKey)
                if not vdrive_at.entry.same(entry):
                    errors.append(
                        BootstrapError(
                            source,
                            line_no,
                            f"a different {VDRIVE_KEYWORD} key is already on line "
                            f"{vdrive_at.line_no}",
                        )
                    )
                continue
            vdrive_at = here
        located.append(here)
    if params_at is not None:
        problem = _params_problem(params_at, vdrive_at)
        if problem:
            errors.append(BootstrapError(source, params_at.line_no, problem))
    if errors:
        raise BootstrapErrors(errors)
    return located


def _params_problem(params_at: _Located, vdrive_at: _Located | None) -> str | None:
    """Why a ``p2ps-params`` line cannot be trusted, or None."""
    assert isinstance(params_at.entry, ParamsLine)
    if vdrive_at is None:
        return (
            f"{PARAMS_KEYWORD} needs the {VDRIVE_KEYWORD} line of the node that signed it "
            "(copy the whole list from `p2pstore bootstrap show` on that node)"
        )
    assert isinstance(vdrive_at.entry, VdriveKey)
    if not params_at.entry.params.signed_by(vdrive_at.entry.public_key):
        return (
            f"{PARAMS_KEYWORD}: the signature does not match the {VDRIVE_KEYWORD} key "
            f"on line {vdrive_at.line_no} (copy both lines from the same list)"
        )
    return None


def _to_list(located: Iterable[_Located]) -> BootstrapList:
    seeds: list[Seed] = []
    vdrive: VdriveKey | None = None
    params: GridParams | None = None
    for loc in located:
        if isinstance(loc.entry, Seed):
            seeds.append(loc.entry)
        elif isinstance(loc.entry, ParamsLine):
            params = loc.entry.params
        else:
            vdrive = loc.entry
    return BootstrapList(tuple(seeds), vdrive, params)


def parse_bootstrap(text: str, *, source: str = "bootstrap text") -> BootstrapList:
    """Parse a whole list; raises :class:`BootstrapErrors` naming every bad line."""
    return _to_list(_parse_located(text, source))


@dataclass(frozen=True, slots=True)
class MergeResult:
    """What :func:`merge` changed; ``vdrive_conflict`` is an incoming key NOT applied."""

    merged: BootstrapList
    added: tuple[Seed, ...] = ()
    updated: tuple[tuple[Seed, Seed], ...] = ()  # (old, new)
    vdrive_added: VdriveKey | None = None
    vdrive_replaced: VdriveKey | None = None
    vdrive_conflict: VdriveKey | None = field(default=None)
    params_set: GridParams | None = None  # a p2ps-params line added or replaced

    @property
    def changed(self) -> bool:
        return bool(
            self.added
            or self.updated
            or self.vdrive_added
            or self.vdrive_replaced
            or self.params_set
        )


def _merged_seed(old: Seed, new: Seed) -> Seed:
    return Seed(old.node_id, new.host, new.port, new.label or old.label)


def merge(
    base: BootstrapList, incoming: BootstrapList, *, replace_vdrive: bool = False
) -> MergeResult:
    """Merge ``incoming`` into ``base`` (dedupe by node ID; new addresses win)."""
    _text, result = merge_text(base.to_text(header=False), incoming, replace_vdrive=replace_vdrive)
    return result


def merge_text(
    original: str,
    incoming: BootstrapList,
    *,
    source: str = "bootstrap list",
    replace_vdrive: bool = False,
) -> tuple[str, MergeResult]:
    """Merge into the text of a list, keeping its comments and order.

    Updated seeds are rewritten in place, new seeds and a new vdrive line are
    appended. Raises :class:`BootstrapErrors` if ``original`` is itself malformed or
    the result would exceed ``MAX_SEEDS``.
    """
    located = _parse_located(original, source)
    lines = original.splitlines()
    at: dict[NodeId, _Located] = {
        loc.entry.node_id: loc for loc in located if isinstance(loc.entry, Seed)
    }
    vdrive_loc = next((loc for loc in located if isinstance(loc.entry, VdriveKey)), None)
    appended: list[str] = []
    added: list[Seed] = []
    updated: list[tuple[Seed, Seed]] = []
    for seed in incoming.seeds:
        loc = at.get(seed.node_id)
        if loc is None:
            added.append(seed)
            appended.append(seed.to_line())
            continue
        old = loc.entry
        assert isinstance(old, Seed)
        if old.same_address(seed) and (not seed.label or seed.label == old.label):
            continue
        new = _merged_seed(old, seed)
        lines[loc.line_no - 1] = new.to_line()
        updated.append((old, new))
    if len(at) + len(added) > MAX_SEEDS:
        raise BootstrapErrors(
            [BootstrapError(source, 0, f"merging would give more than {MAX_SEEDS} seeds")]
        )
    vdrive_added = vdrive_replaced = vdrive_conflict = None
    if incoming.vdrive is not None:
        if vdrive_loc is None:
            vdrive_added = incoming.vdrive
            appended.append(incoming.vdrive.to_line())
        else:
            assert isinstance(vdrive_loc.entry, VdriveKey)
            old_vd, new_vd = vdrive_loc.entry, incoming.vdrive
            if (
                old_vd.public_key == new_vd.public_key
                and old_vd.read_secret is None
                and new_vd.read_secret is not None
            ):
                # the same key, now with the read secret: an addition, not a conflict
                vdrive_replaced = new_vd
                lines[vdrive_loc.line_no - 1] = new_vd.to_line()
            elif old_vd.public_key != new_vd.public_key or (
                new_vd.read_secret is not None and not old_vd.same(new_vd)
            ):
                if replace_vdrive:
                    vdrive_replaced = incoming.vdrive
                    lines[vdrive_loc.line_no - 1] = incoming.vdrive.to_line()
                else:
                    vdrive_conflict = incoming.vdrive
    final_vdrive = vdrive_added or vdrive_replaced or (vdrive_loc.entry if vdrive_loc else None)
    params_set = _merge_params(located, lines, appended, incoming, final_vdrive)
    new_text = "".join(line + "\n" for line in lines + appended)
    result = MergeResult(
        merged=parse_bootstrap(new_text, source=source),
        added=tuple(added),
        updated=tuple(updated),
        vdrive_added=vdrive_added,
        vdrive_replaced=vdrive_replaced,
        vdrive_conflict=vdrive_conflict,
        params_set=params_set,
    )
    return new_text, result


def _merge_params(
    located: list[_Located],
    lines: list[str],
    appended: list[str],
    incoming: BootstrapList,
    vdrive: Entry | None,
) -> GridParams | None:
    """Take the incoming ``p2ps-params`` line if the list's (merged) vdrive key signed
    it: in place of the old one, or appended. Returns it if it changed anything."""
    new = incoming.params
    if new is None or not isinstance(vdrive, VdriveKey) or not new.signed_by(vdrive.public_key):
        return None
    old = next((loc for loc in located if isinstance(loc.entry, ParamsLine)), None)
    if old is not None:
        assert isinstance(old.entry, ParamsLine)
        if old.entry.params == new:
            return None
        lines[old.line_no - 1] = ParamsLine(new).to_line()
    else:
        appended.append(ParamsLine(new).to_line())
    return new


def read_bootstrap_text(path: Path) -> str:
    """Read a list file with a size limit; raises :class:`BootstrapErrors` on failure."""
    try:
        with path.open("rb") as f:
            data = f.read(MAX_TEXT_CHARS * 4 + 1)
    except OSError as e:
        raise BootstrapErrors(
            [BootstrapError(str(path), 0, f"cannot read bootstrap list: {e.strerror}")]
        ) from None
    if len(data) > MAX_TEXT_CHARS * 4:
        raise BootstrapErrors([BootstrapError(str(path), 0, "file is too large")])
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise BootstrapErrors(
            [BootstrapError(str(path), 0, f"not UTF-8 text (byte {e.start})")]
        ) from None


def load_bootstrap_file(path: Path) -> BootstrapList:
    return parse_bootstrap(read_bootstrap_text(path), source=str(path))
