"""``[network]`` in p2pstore.toml (docs/nat.md, "Node behaviour")."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from p2pstore.node.config import (
    ConfigError,
    NetworkSection,
    NodeSection,
    StorageSection,
    load_config,
)
from p2pstore.node.config_template import render_config


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "p2pstore.toml"
    path.write_text(text)
    return path


def test_defaults_and_values(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "")).network == NetworkSection()
    text = (
        '[network]\nreachability = "private"\nhole_punching = false\nuse_relays = false\n'
        'relays = 1\nkeepalive = "10s"\nrecheck_interval = "5m"\n'
    )
    net = load_config(write(tmp_path, text)).network
    assert net == NetworkSection("private", False, False, 1, 10, 300)


def test_template_documents_the_section_commented_out(tmp_path: Path) -> None:
    text = render_config(NodeSection(), StorageSection())
    assert "# [network]" in text and '# reachability = "auto"' in text
    # uncommenting the block gives the defaults back
    lines = []
    on = False
    for line in text.splitlines():
        if line == "# [network]":
            on = True
        elif on and not line:
            on = False  # the block ends at the first blank line
        if on and line.startswith("# ") and ("=" in line or line == "# [network]"):
            line = line[2:].split("  #")[0].rstrip()
        lines.append(line)
    tomllib.loads("\n".join(lines))
    assert load_config(write(tmp_path, "\n".join(lines))).network == NetworkSection()


@pytest.mark.parametrize(
    ("toml", "key", "problem"),
    [
        ('[network]\nreachability = "maybe"', "[network] reachability", "not one of"),
        ("[network]\nreachability = 1", "[network] reachability", "not one of"),
        ('[network]\nhole_punching = "yes"', "[network] hole_punching", "true or false"),
        ("[network]\nrelays = 0", "[network] relays", "out of range 1..4"),
        ('[network]\nkeepalive = "60s"', "[network] keepalive", "out of range 5 s .. 25 s"),
        ('[network]\nrecheck_interval = "10s"', "[network] recheck_interval", "minimum of 60"),
        ("[network]\nrelay = true", "[network] relay", "unknown key"),
    ],
)
def test_errors(tmp_path: Path, toml: str, key: str, problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, toml))
    assert info.value.key == key and problem in info.value.problem
