"""Names in a node directory that light readers need (the CLI finding its node's
config) without importing the config parser."""

from __future__ import annotations

CONFIG_FILE = "p2pstore.toml"
