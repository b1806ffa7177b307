"""Local grid bookkeeping without processes: grid.json validation, happy choice,
refusing a directory that is not a grid, node creation with fixed loopback ports."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from p2pstore import cli
from p2pstore.node.config import load_config
from p2pstore.node.localgrid import (
    INTRODUCER,
    Grid,
    GridProblem,
    create_or_extend,
    default_grid_dir,
    happy_for,
)


def test_happy_for_leaves_one_node_spare() -> None:
    assert [happy_for(n) for n in (1, 3, 4, 5, 8, 9, 20)] == [3, 3, 3, 4, 7, 7, 7]


def test_default_dir_follows_xdg() -> None:
    assert default_grid_dir({"XDG_DATA_HOME": "/x"}) == Path("/x/p2pstore/local-grid")
    assert default_grid_dir({}).parts[-3:] == ("share", "p2pstore", "local-grid")


def test_every_grid_command_honours_p2pstore_grid(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``make run`` uses $P2PSTORE_GRID; ``grid status|down|destroy`` must find the same
    grid, not the default one."""
    env_grid = tmp_path / "from-env"
    assert default_grid_dir({"P2PSTORE_GRID": str(env_grid), "XDG_DATA_HOME": "/x"}) == env_grid
    monkeypatch.setenv("P2PSTORE_GRID", str(env_grid))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    for command in ("status", "down", "destroy"):
        assert cli.main(["grid", command]) == 1
        err = capsys.readouterr().err
        assert f"no local grid in {env_grid}" in err, err


@pytest.mark.parametrize(
    "doc",
    [
        "not json",
        json.dumps({"format": "other", "nodes": ["introducer"]}),
        json.dumps({"format": "p2pstore-local-grid-v1", "nodes": []}),
        json.dumps({"format": "p2pstore-local-grid-v1", "nodes": ["node1"]}),
        json.dumps({"format": "p2pstore-local-grid-v1", "nodes": ["introducer", "../etc"]}),
    ],
)
def test_bad_grid_file_is_refused(tmp_path: Path, doc: str) -> None:
    (tmp_path / "grid.json").write_text(doc)
    with pytest.raises(GridProblem):
        Grid.load(tmp_path)


def test_create_and_extend(tmp_path: Path) -> None:
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "file").write_text("x")
    with pytest.raises(GridProblem, match="not empty"):
        create_or_extend(tmp_path / "busy", 2, io.StringIO())
    root = tmp_path / "g"
    grid = create_or_extend(root, 2, io.StringIO())
    assert grid.names == (INTRODUCER, "node1", "node2")
    assert Grid.load(root) == grid
    ports = set()
    for name in grid.names:
        config = load_config(root / name / "p2pstore.toml")
        assert config.node.listen.host == "127.0.0.1" and config.node.listen.port > 0
        ports.add(config.node.listen.port)
        if name != INTRODUCER:
            assert config.client.shares_happy == 3 and config.storage.enabled
            assert (root / name / "bootstrap.txt").read_text().count("\np2ps-seed ") == 1
        else:
            assert not config.storage.enabled
    assert len(ports) == 3
    out = io.StringIO()
    again = create_or_extend(root, None, out)
    assert again == grid and "created" not in out.getvalue()
    node1 = root / "node1" / "p2pstore.toml"
    edited = node1.read_text().replace('reserved_space = "100MB"', 'reserved_space = "2GB"')
    node1.write_text(edited)  # the user's own edit
    out = io.StringIO()
    bigger = create_or_extend(root, 5, out)
    assert bigger.storage_names == ("node1", "node2", "node3", "node4", "node5")
    assert node1.read_text() == edited  # never rewritten, edits kept byte for byte
    assert load_config(root / "node5" / "p2pstore.toml").client.shares_happy == 4
    assert "node1: [client] shares_happy = 3; a grid of 5 storage nodes suggests 4" in (
        out.getvalue()
    )
    before = {n: (root / n / "p2pstore.toml").read_bytes() for n in bigger.names}
    create_or_extend(root, None, io.StringIO())  # `grid up` again: nothing to change
    assert {n: (root / n / "p2pstore.toml").read_bytes() for n in bigger.names} == before
