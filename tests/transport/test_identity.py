"""Node identity: ID derivation, base32 text form, key files."""

from __future__ import annotations

import contextlib
import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from quic_transport.identity import (
    ID_BYTES,
    IdentityError,
    NodeId,
    NodeKey,
    b32decode,
    b32encode,
    verify_signature,
)


@given(st.binary(max_size=64))
def test_b32_round_trip(data: bytes) -> None:
    assert b32decode(b32encode(data)) == data


@given(st.text(max_size=40))
def test_b32decode_never_crashes_unexpectedly(text: str) -> None:
    with contextlib.suppress(IdentityError):
        b32decode(text)


def test_node_id_text_is_32_chars_and_strict() -> None:
    key = NodeKey.generate()
    text = key.node_id.b32
    assert len(text) == 32
    assert NodeId.from_b32(text) == key.node_id
    with pytest.raises(IdentityError, match="15 bytes, expected 20"):
        NodeId.from_b32(text[:-8])
    with pytest.raises(IdentityError, match="not lowercase base32"):
        NodeId.from_b32(text.upper())
    with pytest.raises(IdentityError, match="not lowercase base32"):
        NodeId.from_b32(text[:-1] + "1")


def test_node_id_is_hash_of_public_key() -> None:
    seed = bytes(range(32))
    key = NodeKey.from_seed(seed)
    # Known answer: pins the derivation (BLAKE2b-160, personalization "p2ps:node-id:v1").
    assert key.node_id.b32 == "4ak6xopxdzhfmaj2symeoa7wmgjphhvh"
    assert len(key.node_id.raw) == ID_BYTES
    other = NodeKey.from_seed(bytes(31) + b"\x01")
    assert other.node_id != key.node_id


def test_distance_is_xor() -> None:
    a = NodeId(bytes(19) + b"\x05")
    b = NodeId(bytes(19) + b"\x03")
    assert a.distance(b) == 6
    assert a.distance(a) == 0


def test_sign_verify() -> None:
    key = NodeKey.generate()
    sig = key.sign(b"hello")
    assert verify_signature(key.public_key, b"hello", sig)
    assert not verify_signature(key.public_key, b"hellO", sig)
    assert not verify_signature(key.public_key, b"hello", sig[:-1])
    assert not verify_signature(NodeKey.generate().public_key, b"hello", sig)


def test_key_file_mode_0600_and_no_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "node.key"
    key = NodeKey.load_or_create(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert NodeKey.load(path).node_id == key.node_id
    with pytest.raises(FileExistsError):
        key.save(path)


def test_key_file_refused_when_world_readable(tmp_path: Path) -> None:
    path = tmp_path / "node.key"
    NodeKey.generate().save(path)
    path.chmod(0o644)
    with pytest.raises(IdentityError, match="chmod 600"):
        NodeKey.load(path)


def test_key_file_garbage(tmp_path: Path) -> None:
    path = tmp_path / "node.key"
    path.write_text("hello\n")
    path.chmod(0o600)
    with pytest.raises(IdentityError, match="not a p2pstore node key"):
        NodeKey.load(path)


def test_repr_hides_secret() -> None:
    key = NodeKey.generate()
    assert b32encode(key.seed) not in repr(key)
