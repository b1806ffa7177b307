"""Invitations and the grid's encoding line, sans network (docs/bootstrap.md,
"Invitations", "Grid parameters")."""

from __future__ import annotations

from pathlib import Path

import pytest

from p2pstore.node.address import HostPort
from p2pstore.node.bootstrap import BootstrapList, VdriveKey, merge, parse_bootstrap
from p2pstore.node.config import ClientSection, NodeConfig
from p2pstore.node.errors import BootstrapErrors
from p2pstore.node.grid_params import GridParams, effective_encoding
from p2pstore.node.invitations import InviteBook, InviteCode, InviteError
from quic_transport.identity import NodeKey

KEY = NodeKey.generate()
OTHER = NodeKey.generate()


def test_a_code_works_once_before_it_expires_and_never_after_revocation(tmp_path: Path) -> None:
    book = InviteBook(tmp_path)
    secret = book.create("alice", write=True, ttl=3600, now=1000.0)
    with pytest.raises(InviteError, match="exists already"):
        book.create("alice", write=False, ttl=60, now=1000.0)
    with pytest.raises(InviteError) as e:
        book.redeem(b"x" * 16, OTHER.node_id, 1001.0)
    assert e.value.code == "invite-unknown"
    assert book.writers() == frozenset()
    inv = book.redeem(secret, OTHER.node_id, 1001.0)
    assert inv.used_by == OTHER.node_id.b32 and book.writers() == {OTHER.node_id}
    with pytest.raises(InviteError) as e:
        book.redeem(secret, KEY.node_id, 1002.0)
    assert e.value.code == "invite-used" and "already used" in e.value.message
    late = book.create("bob", write=False, ttl=60, now=1000.0)
    with pytest.raises(InviteError) as e:
        book.redeem(late, KEY.node_id, 1061.0)
    assert e.value.code == "invite-expired"
    book.revoke("alice")
    assert book.writers() == frozenset()  # the vdrive node refuses alice from now on
    text = (tmp_path / "invitations.json").read_text()
    assert secret.hex() not in text and "alice" in text  # only a hash of the secret
    assert (tmp_path / "invitations.json").stat().st_mode & 0o777 == 0o600
    with pytest.raises(InviteError, match="no invitation or writer named"):
        book.revoke("nobody")


def test_codes_round_trip_and_damaged_ones_say_so() -> None:
    code = InviteCode(KEY.node_id, HostPort("2001:db8::7", 3456), b"s" * 16)
    text = code.to_text()
    assert text.startswith("p2ps-invite:") and "@[2001:db8::7]:3456/" in text
    assert InviteCode.parse(text) == code
    assert InviteCode.parse(text[:40] + "\n" + text[40:]) == code  # wrapped by a chat program
    for bad, why in (
        ("hello", "starts with"),
        (text[: text.index("/")], "cut off"),
        (text[:-3], "damaged"),
    ):
        with pytest.raises(InviteError, match=why):
            InviteCode.parse(bad)


def _list(params: GridParams | None, key: NodeKey = KEY) -> str:
    return BootstrapList(vdrive=VdriveKey(key.public_key), params=params).to_text()


def test_the_params_line_must_be_signed_by_the_lists_vdrive_key() -> None:
    good = GridParams.signed(3, 10, 4, KEY)
    assert parse_bootstrap(_list(good)).params == good
    forged = GridParams.signed(3, 10, 4, OTHER)
    with pytest.raises(BootstrapErrors, match="signature does not match the p2ps-vdrive key"):
        parse_bootstrap(_list(forged))
    alone = _list(good).replace(f"p2ps-vdrive {VdriveKey(KEY.public_key).b32}", "")
    with pytest.raises(BootstrapErrors, match="needs the p2ps-vdrive line"):
        parse_bootstrap(alone)
    with pytest.raises(BootstrapErrors, match="k <= happy <= N"):
        parse_bootstrap(_list(good).replace("p2ps-params 3 10 4", "p2ps-params 3 10 11"))
    # merging: a newer signed line replaces the old; one signed by another key is ignored
    newer = GridParams.signed(3, 10, 5, KEY)
    merged = merge(parse_bootstrap(_list(good)), BootstrapList(params=newer)).merged
    assert merged.params == newer


def test_a_node_uses_the_grids_encoding_unless_its_config_sets_one() -> None:
    grid = GridParams.signed(2, 6, 4, KEY)
    plain = NodeConfig(Path("x/p2pstore.toml"))
    assert effective_encoding(plain, grid).describe() == (
        "2-of-6, happy 4 (the grid's p2ps-params line)"
    )
    assert effective_encoding(plain, None).source == "default"
    own = NodeConfig(
        Path("x/p2pstore.toml"),
        client=ClientSection(shares_happy=5, explicit=frozenset({"shares_happy"})),
    )
    enc = effective_encoding(own, grid)
    assert (enc.k, enc.n, enc.happy, enc.source) == (3, 10, 5, "config")


def test_no_arguments_lists_the_commands(capsys: pytest.CaptureFixture[str]) -> None:
    from p2pstore import cli

    assert cli.main([]) == 2
    err = capsys.readouterr().err
    assert "create-node" in err and "invite" in err and "put" in err
