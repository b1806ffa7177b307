"""The SFTP users file and client path mapping (docs/sftp.md), no I/O."""

from __future__ import annotations

from pathlib import Path

import asyncssh
import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pstore.app.vpath import BadPath, VPath
from p2pstore.sftp.errors import SftpRemoteError, UsersFileError
from p2pstore.sftp.paths import client_path, normalize, show, under
from p2pstore.sftp.users import Mapping, parse_mapping, parse_users

KEY = asyncssh.generate_private_key("ssh-ed25519")
KEY2 = asyncssh.generate_private_key("ssh-ed25519")
PUB = KEY.export_public_key().decode().strip()
PUB2 = KEY2.export_public_key().decode().strip()
DIRCAP = "p2ps:dir:lit:aaaa:bbbb"
F = Path("sftp_users")


def test_a_users_file_with_comments_several_keys_and_each_kind_of_mapping() -> None:
    text = f"""
# user mapping key
alice private:/ {PUB} alice@laptop
alice private:/ {PUB2}
bob   ro:shared:/photos {PUB}
guest {DIRCAP} {PUB2} a guest
"""
    users = parse_users(text, F)
    assert set(users) == {"alice", "bob", "guest"}
    assert users["alice"].keys == {KEY.public_data, KEY2.public_data}
    assert users["alice"].mapping == Mapping(VPath("private", ()), None, False)
    assert users["bob"].mapping == Mapping(VPath("shared", ("photos",)), None, True)
    assert users["guest"].mapping.dircap == DIRCAP and users["guest"].mapping.read_only
    assert DIRCAP not in repr(users["guest"])  # the cap is a secret


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("alice private:/", "expected: user mapping"),
        ("al/ce private:/ PUB", "not a user name"),
        ("-x private:/ PUB", "not a user name"),
        ("alice /tmp PUB", "the mapping must be"),
        ("alice other:/x PUB", "the mapping must be"),
        ("alice private:/a/../b PUB", "not allowed"),
        ("alice private:/ ssh-ed25519 AAAAnotakey", "not a public key"),
    ],
)
def test_a_bad_line_names_the_file_and_line(line: str, problem: str) -> None:
    line = line.replace("PUB", PUB)  # the key is made per run: not in the test's id
    with pytest.raises(UsersFileError) as info:
        parse_users(f"# header\n{line}\n", F)
    assert info.value.line == 2 and problem in str(info.value)
    assert str(info.value).startswith("sftp_users:2: ")


def test_one_user_cannot_have_two_mappings() -> None:
    with pytest.raises(UsersFileError, match="mapped differently"):
        parse_users(f"a private:/ {PUB}\na shared:/ {PUB2}\n", F)


def test_a_dircap_mapping_is_read_only() -> None:
    assert parse_mapping(DIRCAP).read_only
    with pytest.raises(ValueError):
        Mapping(None, DIRCAP, False)


@pytest.mark.parametrize(
    ("raw", "parts"),
    [
        (b"", ()),
        (b"/", ()),
        (b".", ()),
        (b"..", ()),
        (b"/../../..", ()),
        (b"../etc/passwd", ("etc", "passwd")),
        (b"/a/./b//c/", ("a", "b", "c")),
        (b"a/b/../../../c", ("c",)),
        (b"/a/b/../..", ()),
    ],
)
def test_client_paths_never_leave_the_root(raw: bytes, parts: tuple[str, ...]) -> None:
    assert client_path(raw) == parts
    assert show(parts) == "/" + "/".join(parts)


@given(st.lists(st.sampled_from(["..", ".", "", "a", "b", "..", "c/.."]), max_size=12))
def test_any_mix_of_dots_stays_below_the_mapping(segments: list[str]) -> None:
    root = VPath("private", ("photos",))
    parts = normalize("/".join(segments))
    assert ".." not in parts and "." not in parts and "" not in parts
    assert under(root, parts).is_within(root)


def test_paths_that_are_not_text_or_not_names_are_refused() -> None:
    with pytest.raises(SftpRemoteError):
        client_path(b"\xff\xfe")
    with pytest.raises(SftpRemoteError):
        client_path(b"a\x00b")
    with pytest.raises(BadPath):
        under(VPath("shared", ()), ("a\x01",))
