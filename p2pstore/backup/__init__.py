"""``p2pstore backup`` and ``p2pstore restore``: incremental snapshots of a local
folder into a drive, through the node's HTTP API (docs/backup.md).

- :mod:`.db`: the local backup database (SQLite): what each local file got, and
  the directory objects already made;
- :mod:`.scan`: walking the local folder (exclusions, names the drive can hold,
  what is not a regular file);
- :mod:`.snapshot`: one backup run, bottom-up, into ``Archives/<time>`` and
  ``Latest``;
- :mod:`.restore`: bringing a snapshot back to a local folder.
"""

#: files a backup uploads at once, by default (each a round trip of placement for a
#: small file)
JOBS = 4
#: the most a user may ask for (each a connection to the node and a worker thread)
MAX_JOBS = 64


def jobs_from(text: str) -> int:
    """``-j N`` as typed (CLI and shell): 1 to :data:`MAX_JOBS`; ValueError saying so."""
    try:
        n = int(text)
    except ValueError:
        n = 0
    if not 1 <= n <= MAX_JOBS:
        raise ValueError(f"takes a number from 1 to {MAX_JOBS}, not {text!r}")
    return n
