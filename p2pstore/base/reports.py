"""Text the front ends show (the shell and the CLI alike): remote text made safe for a
terminal, and the ``info`` report of a cap (what it names and where its shares are).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from .progress import human_bytes


def safe(text: str) -> str:
    """``text`` with control characters (C0, DEL, C1) escaped as ``\\xNN``."""
    return "".join(
        c if c.isprintable() or c == " " else f"\\x{ord(c):02x}" if ord(c) < 256 else "?"
        for c in text
    )


#: facts the ``info`` report shows from the cap, not again from the backend's storage
_SHOWN_ABOVE = frozenset({"size", "storage_index", "k", "n", "backend"})


def info_lines(
    doc: Mapping[str, Any], *, path: str | None = None, cap: str | None = None
) -> list[str]:
    """The ``info`` report: what the cap names and where its shares are."""
    if str(doc.get("kind", "")).startswith("mut"):
        return _mutable_info_lines(doc, path)
    lines = []
    if path is not None:
        lines.append(f"path:          {safe(path)}")
    size = doc.get("size", 0)
    lines.append(f"kind:          {doc.get('kind')}")
    lines.append(f"size:          {size} bytes ({human_bytes(size)})")
    if cap is not None:
        lines.append(f"cap:           {cap}")
    if doc.get("kind") == "lit":
        lines.append("stored:        inside the cap (a literal file: no shares)")
        return lines
    lines.append(f"verify cap:    {doc.get('verify_cap')}")
    lines.append(f"encoding:      {doc.get('k')}-of-{doc.get('n')}")
    lines.append(f"storage index: {doc.get('storage_index')}")
    storage = doc.get("storage") or {}
    for key, value in sorted(storage.items()):
        if key in _SHOWN_ABOVE:
            continue  # the backend repeats what the cap itself says
        lines.extend(_fact(key, value))
    return lines


_MUTABLE_KINDS = {"mut": "write cap", "mut-ro": "read cap", "mut-verify": "verify cap"}


def _mutable_info_lines(doc: Mapping[str, Any], path: str | None) -> list[str]:
    """``info`` of a mutable cap (docs/mutable.md): the latest version and the root's
    holders."""
    lines = [] if path is None else [f"path:          {safe(path)}"]
    what = "live directory" if doc.get("directory") else "mutable file"
    lines.append(f"kind:          {what}, {_MUTABLE_KINDS.get(str(doc.get('kind')), '?')}")
    lines.append(f"version:       {doc.get('sequence')}")
    if doc.get("size") is not None:
        lines.append(f"size:          {doc['size']} bytes ({human_bytes(doc['size'])})")
    if isinstance(doc.get("published_at"), int | float):
        when = time.localtime(doc["published_at"])
        lines.append(f"published:     {time.strftime('%Y-%m-%d %H:%M:%S', when)}")
    if doc.get("read_cap"):
        lines.append(f"read cap:      {doc['read_cap']}")
    lines.append(f"verify cap:    {doc.get('verify_cap')}")
    storage = doc.get("storage") or {}
    held, asked = storage.get("holding_latest"), storage.get("peers_asked")
    lines.append(f"root held by:  {held} of {asked} peers asked")
    for key in ("storage_index", "stale", "bad", "unreachable"):
        lines.extend(_fact(key, storage.get(key)))
    return lines


def _fact(key: str, value: Any) -> list[str]:
    label = f"{safe(key).replace('_', ' ') + ':':<14} "
    if value in ([], {}, None, ""):
        return [label + "-"]
    if (
        isinstance(value, Mapping)
        and value
        and all(isinstance(v, list) and all(isinstance(x, str) for x in v) for v in value.values())
    ):
        # {share number: [node IDs]}: shown per node ("where the shares are")
        holders: dict[str, list[str]] = {}
        for share, nodes in value.items():
            for node in nodes:
                holders.setdefault(node, []).append(str(share))
        out = [label.rstrip()]
        for node, shares in sorted(holders.items()):
            out.append(
                f"  {safe(node)}  {'share' if len(shares) == 1 else 'shares'} "
                f"{', '.join(safe(x) for x in shares)}"
            )
        return out
    if isinstance(value, list) and value and isinstance(value[0], Mapping):
        out = [label.rstrip()]
        for item in value:
            out.append("  " + ", ".join(f"{safe(str(k))}={safe(str(v))}" for k, v in item.items()))
        return out
    if isinstance(value, Mapping):
        inner = ", ".join(f"{safe(str(k))}={safe(str(v))}" for k, v in value.items())
        return [label + inner]
    if isinstance(value, list):
        return [label + ", ".join(safe(str(v)) for v in value)]
    return [label + safe(str(value))]


def _status_part(doc: Mapping[str, Any], key: str) -> Mapping[str, Any] | None:
    """``doc[key]`` or ``doc["details"][key]`` of a node's status, if a map."""
    part = doc.get(key)
    if not isinstance(part, Mapping):
        details = doc.get("details")
        part = details.get(key) if isinstance(details, Mapping) else None
    return part if isinstance(part, Mapping) else None


def maintenance_rows(doc: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The maintenance figures of a node's status (``details.maintenance``;
    docs/maintenance.md, "Status"), as (label, text) rows for every front end."""
    m = _status_part(doc, "maintenance")
    if m is None:
        return lease_rows(doc)
    if not m.get("enabled"):
        return [("maintenance", "off"), *lease_rows(doc)]

    def n(key: str) -> int:
        return _count(m, key)

    rows = [
        (
            "maintenance",
            f"{n('storage_indexes')} files held (custodian of {n('custodian_of')}), "
            f"{n('checked_last_day')} checks in the last day",
        ),
        (
            "repairs",
            f"{n('repairs')} ({n('shares_repaired')} shares), {n('moves')} shares moved "
            f"nearer, {human_bytes(n('bytes_sent'))} sent, {n('corrupt_removed')} corrupt "
            "copies deleted",
        ),
        ("failures", f"{n('failures')} ({n('unrecoverable')} files with too few shares)"),
    ]
    recent = m.get("recent_failures")
    if isinstance(recent, list) and recent and isinstance(recent[-1], Mapping):
        last = recent[-1]
        rows.append(("last failure", safe(f"{last.get('si')}: {last.get('reason')}")[:300]))
    return rows + lease_rows(doc)


def _count(part: Mapping[str, Any], key: str) -> int:
    v = part.get(key)
    return v if isinstance(v, int) and not isinstance(v, bool) else 0


def _plural(n: int, what: str) -> str:
    return f"{n} {what}" if n == 1 else f"{n} {what}s"


def lease_rows(doc: Mapping[str, Any]) -> list[tuple[str, str]]:
    """What keeps files alive from this node (docs/node.md, "Leases"): the lease
    book (``details.leases``) and the reference keeper's last round
    (``details.maintenance.references.last_round``)."""
    rows = []
    book = _status_part(doc, "leases")
    if book is not None:
        rows.append(
            (
                "lease book",
                f"renewing {_plural(_count(book, 'tracked'), 'upload')} "
                f"({_count(book, 'linked')} seen linked from this node's drives)",
            )
        )
    m = _status_part(doc, "maintenance")
    refs = m.get("references") if m is not None else None
    last = refs.get("last_round") if isinstance(refs, Mapping) else None
    if isinstance(last, Mapping):
        text = (
            f"{_count(last, 'renewed')} files and directories renewed "
            f"({_count(last, 'files_in_drives')} in the drives, {_count(last, 'pins')} pins), "
            f"{_count(last, 'failed')} failed"
        )
        if not last.get("complete_walk"):
            text += "; the walk missed some directories, so no upload was let go"
        elif _count(last, "uploads_let_go"):
            gone = _plural(_count(last, "uploads_let_go"), "upload")
            text += f"; {gone} no longer linked let go"
        rows.append(("kept alive", text))
    return rows


#: the states ``check --deep`` reports, in the order its summary lists them
DEEP_STATES = ("healthy", "repaired", "not healthy", "unrecoverable")


def deep_state(doc: Mapping[str, Any]) -> str:
    """One file's state in ``check --deep``, from its check report."""
    if doc.get("repair_attempted") and doc.get("repaired"):
        return "repaired"
    if doc.get("healthy"):
        return "healthy"
    return "not healthy" if doc.get("recoverable") else "unrecoverable"


def deep_summary(files: int, root: str, tally: Mapping[str, int], distinct: int) -> str:
    """``check --deep``'s last line: the files below ``root`` by state, and how many
    different files that was when some paths share one."""
    summary = ", ".join(f"{n} {state}" for state, n in tally.items())
    shared = f"; {distinct} different" if distinct < files else ""
    return f"{files} files below {root}: {summary}{shared}"


def pin_lines(pins: Sequence[Mapping[str, Any]]) -> list[str]:
    """``pins``: one line per pin (date pinned, verify cap, label), then the count."""
    lines = [
        f"{time.strftime('%Y-%m-%d', time.localtime(p.get('pinned_at') or 0))}  "
        f"{safe(str(p.get('verify_cap')))}  {safe(str(p.get('label') or ''))}"
        for p in pins
    ]
    return [*lines, f"{len(pins)} pins"]


def peer_lines(peers: Sequence[Mapping[str, Any]]) -> list[str]:
    """``peers``: one line per peer (node ID, address, state, how it is connected,
    last seen), then the counts. The CLI and the shell print the same."""
    if not peers:
        return ["no peers"]
    lines = []
    for p in peers:
        seen = p.get("last_seen")
        when = (
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seen))
            if isinstance(seen, int | float)
            else "-"
        )
        state = "connected" if p.get("connected") else "known"
        raw = p.get("details")
        details: Mapping[str, Any] = raw if isinstance(raw, Mapping) else {}
        via = str(details.get("connection") or "-")
        if details.get("our_relay"):
            via += " (our relay)"
        lines.append(
            f"{safe(str(p.get('node_id')))}  {safe(str(p.get('address'))):<28} {state:<9}  "
            f"{safe(via):<18} last seen {when}"
        )
    connected = sum(1 for p in peers if p.get("connected"))
    return [*lines, f"{len(peers)} peers ({connected} connected)"]


def nat_rows(nat: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The reachability rows of ``status`` (docs/nat.md, "Status")."""
    relays = [r for r in nat.get("relays") or [] if isinstance(r, Mapping)]
    text = ", ".join(
        str(r.get("address")) + (f" (relayed {r['relayed']})" if r.get("relayed") else "")
        for r in relays
    )
    rows = [
        (
            "reachability",
            f"{nat.get('reachability')} (mode {nat.get('mode')}; "
            f"{nat.get('reached_by')} of {nat.get('answers')} peers could dial us)",
        ),
        ("observed", f"{nat.get('observed') or '-'} (NAT type {nat.get('nat_type')})"),
        ("DHT mode", str(nat.get("dht_mode"))),
        ("relays", text or "none"),
        ("port mapping", str(nat.get("port_mapping") or "none")),
    ]
    return [(label, safe(value)) for label, value in rows]


def check_lines(doc: Mapping[str, Any]) -> list[str]:
    """A check report (``GET /api/v1/check``) as the CLI and the shell print it."""
    if doc.get("healthy"):
        state = "healthy"
    elif doc.get("recoverable"):
        state = "NOT HEALTHY (recoverable)"
    else:
        state = "NOT RECOVERABLE"
    how = "verified every byte" if doc.get("verified") else "checked share presence"
    lines = [
        f"{state}: {doc.get('shares_good')} of {doc.get('shares_total')} shares good "
        f"(need {doc.get('shares_needed')}; {how})"
    ]
    lines.extend(f"  {safe(str(p))}" for p in doc.get("problems") or [])
    if doc.get("repaired"):
        lines.append("repaired")
    elif doc.get("repair_attempted"):
        lines.append("nothing to repair" if doc.get("healthy") else "repair failed")
    return lines


def helper_notes(doc: Mapping[str, Any]) -> list[str]:
    """What an upload's answer says about upload helpers (docs/helper.md): the
    helper that placed the shares, and each helper that failed before."""
    details = doc.get("details")
    if not isinstance(details, Mapping):
        return []
    out = [f"upload helper failed: {safe(str(f))}" for f in details.get("helper_failures", ())]
    if isinstance(details.get("helper"), str):
        out.append(f"sent through upload helper {safe(details['helper'])[:16]}")
    elif out:
        out.append("uploaded directly instead")
    return out


def helper_rows(doc: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The upload-helper figures of a node's status (``details.helper``;
    docs/helper.md, "Status"), as (label, text) rows for every front end."""
    h = _status_part(doc, "helper")
    if h is None:
        return []

    def n(key: str) -> int:
        v = h.get(key)
        return v if isinstance(v, int) and not isinstance(v, bool) else 0

    rows = []
    if h.get("serving"):
        rows.append(
            (
                "helper",
                f"serving: {n('uploads_placed')} placed, {n('uploads_present')} already "
                f"in the grid, {n('uploads_failed')} failed, {n('uploads_in_progress')} in "
                f"progress; {human_bytes(n('bytes_received'))} received "
                f"({human_bytes(n('bytes_today'))} today)",
            )
        )
    use = h.get("use")
    if use in ("always", "slow"):
        text = f"{use}" + (
            f" (measured upload rate {human_bytes(n('measured_upload_rate'))}/s)"
            if n("measured_upload_rate")
            else ""
        )
        rows.append(("uses helpers", text))
    rates = h.get("helper_rates")
    if isinstance(rates, Mapping) and rates:
        fastest = sorted(
            ((v, str(k)) for k, v in rates.items() if isinstance(v, int | float)), reverse=True
        )
        text = ", ".join(f"{k[:16]} {human_bytes(int(v))}/s" for v, k in fastest[:4])
        rows.append(("helpers by throughput", text))
    return rows
