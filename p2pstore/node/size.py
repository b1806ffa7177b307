"""Human size and duration strings for the config: ``"10GB"``, ``"500MiB"``, ``"31d"``.

Invariants:
- Sizes are whole non-negative byte counts. Decimal units are powers of 1000 (kB,
  MB, GB, TB), binary units powers of 1024 (KiB, MiB, GiB, TiB); units are
  case-insensitive except that a lone ``b`` is bytes, never bits. A fraction is
  allowed (``"1.5GB"``) and rounds down to whole bytes.
- Durations are whole seconds from an integer or ``<number><unit>`` with unit
  s, m, h, d or w.
- Every failure raises ``ValueError`` with a message saying what is wrong and what
  would be accepted; callers wrap it with the file and key.
"""

from __future__ import annotations

import re

SIZE_UNITS: dict[str, int] = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "m": 1000**2,
    "mb": 1000**2,
    "g": 1000**3,
    "gb": 1000**3,
    "t": 1000**4,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}
DURATION_UNITS: dict[str, int] = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
MAX_SIZE = 2**63 - 1
MAX_DURATION = 100 * 365 * 86400
_NUM_UNIT_RE = re.compile(r"^\s*([0-9][0-9_]*(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*$")
_UNIT_HELP = "B, kB, MB, GB, TB, KiB, MiB, GiB or TiB"


def parse_size(text: str | int) -> int:
    """Bytes from an int or a size string; raises ``ValueError`` naming the problem."""
    if isinstance(text, bool):
        raise ValueError(f'expected a size like "10GB", got {text!r}')
    if isinstance(text, int):
        if text < 0:
            raise ValueError(f"size {text} is negative")
        if text > MAX_SIZE:
            raise ValueError(f"size {text} is too large")
        return text
    if not isinstance(text, str):
        raise ValueError(f'expected a size like "10GB", got {type(text).__name__}')
    if text.strip().startswith("-"):
        raise ValueError(f"size {text!r} is negative")
    m = _NUM_UNIT_RE.match(text)
    if m is None:
        raise ValueError(f"{text!r} is not a size (expected a number and a unit: {_UNIT_HELP})")
    number, unit = m.group(1), m.group(2)
    factor = SIZE_UNITS.get(unit.lower())
    if factor is None:
        raise ValueError(f"{text!r}: unknown unit {unit!r} (use {_UNIT_HELP})")
    # Exact integer arithmetic, rounding the fraction down (no float, and no decimal
    # module: this module is part of every node process, decimal is 0.4 MB of RSS)
    whole, _, fraction = number.replace("_", "").partition(".")
    scale: int = 10 ** len(fraction)
    try:
        value = int(whole) * factor + int(fraction or "0") * factor // scale
    except ValueError:  # more digits than int() converts
        raise ValueError(f"{text!r} is not a size") from None
    if value > MAX_SIZE:
        raise ValueError(f"size {text!r} is too large")
    return value


def format_size(n: int) -> str:
    """A short human form (binary units), e.g. ``1.5 GiB``; exact for small values."""
    if n < 1024:
        return f"{n} B"
    value = float(n)
    for unit in ("KiB", "MiB", "GiB", "TiB", "PiB"):
        value /= 1024
        if value < 1024 or unit == "PiB":
            return f"{value:.1f} {unit}"
    raise AssertionError("unreachable")  # pragma: no cover


def parse_duration(text: str | int) -> int:
    """Seconds from an int or a string like ``"31d"``, ``"12h"``, ``"90m"``, ``"3600s"``."""
    if isinstance(text, bool):
        raise ValueError(f'expected a duration like "31d", got {text!r}')
    if isinstance(text, int):
        value = text
    elif isinstance(text, str):
        m = _NUM_UNIT_RE.match(text)
        if m is None or "." in m.group(1):
            raise ValueError(
                f"{text!r} is not a duration (expected a whole number and a unit: s, m, h, d, w)"
            )
        factor = DURATION_UNITS.get(m.group(2).lower())
        if factor is None:
            raise ValueError(f"{text!r}: unknown unit {m.group(2)!r} (use s, m, h, d or w)")
        value = int(m.group(1).replace("_", "")) * factor
    else:
        raise ValueError(f'expected a duration like "31d", got {type(text).__name__}')
    if value < 0:
        raise ValueError(f"duration {text!r} is negative")
    if value > MAX_DURATION:
        raise ValueError(f"duration {text!r} is longer than 100 years")
    return value


def format_size_exact(n: int) -> str:
    """The shortest exact size string that :func:`parse_size` reads back as ``n``."""
    for unit, factor in (
        ("TiB", 1024**4),
        ("TB", 1000**4),
        ("GiB", 1024**3),
        ("GB", 1000**3),
        ("MiB", 1024**2),
        ("MB", 1000**2),
        ("KiB", 1024),
        ("kB", 1000),
    ):
        if n and n % factor == 0:
            return f"{n // factor}{unit}"
    return f"{n}B"


def format_duration_exact(seconds: int) -> str:
    """The exact duration string (largest whole unit) that :func:`parse_duration` reads."""
    for unit, factor in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % factor == 0:
            return f"{seconds // factor}{unit}"
    return f"{seconds}s"
