"""Known-answer vectors: any change to the format (key derivation, hashing, layout,
cap text) breaks these, so the format cannot drift silently. Also written down in
docs/file-format.md."""

from __future__ import annotations

import hashlib

from p2pstore.immutable import (
    EncodingParams,
    LiteralCap,
    ReadCap,
    convergent_key,
    encode_bytes,
    hashtree,
    parse_cap,
    read_bytes,
    storage_index,
)

SECRET = bytes(range(32))
DATA = bytes(i % 251 for i in range(1000))
PARAMS = EncodingParams.create(3, 10, 256)  # segment size 258


def test_key_derivation_vectors() -> None:
    assert storage_index(bytes(32)).hex() == "f55afacfad9291246a0405dd067ebeafeeaa7941"
    assert (
        convergent_key(SECRET, PARAMS, DATA).hex()
        == "ca4fba0c842ff389fdd664333956642614e7426e4aad427e3fb8a767861d5773"
    )
    assert (
        convergent_key(SECRET, EncodingParams(), b"").hex()
        == "d9bce56ad28297aca5a5cab7f5216b08da8f1f84b5281c3ec6f94d48497f3149"
    )


def test_hash_tree_vector() -> None:
    root = hashtree.build_tree([bytes(32), bytes([1]) * 32, bytes([2]) * 32])[0]
    assert root.hex() == "d605f0ee0fa812017aa6cf0416e46c19e2c9fbdb0cdabd7f1a74f8abe925df03"


def test_convergent_file_vector() -> None:
    cap, shares = encode_bytes(DATA, PARAMS, convergence_secret=SECRET)
    assert isinstance(cap, ReadCap)
    assert cap.to_string() == (
        "p2ps:chk:3:10:1000:zjh3udeef7zyt7owmqztsvteeykooqtojkwue7r7xctwpbq5k5zq:"
        "nqinitdtdpvrg35vrzitrmg5dzvpiiyn3qyv3dvob24uvc4ypyfa"
    )
    assert cap.verify_cap().to_string() == (
        "p2ps:chk-verify:3:10:1000:5tlykfcsly76hcefdcf3d4zywrrmxd46:"
        "nqinitdtdpvrg35vrzitrmg5dzvpiiyn3qyv3dvob24uvc4ypyfa"
    )
    assert [len(s) for s in shares] == [1092] * 10
    assert (
        hashlib.sha256(b"".join(shares)).hexdigest()
        == "c17fc8c5d51ac6520c27a3cc1973ea181aaba3d237c1da5ed44576527f87d5a0"
    )
    assert (
        hashlib.sha256(shares[7]).hexdigest()
        == "5ab67fcb19388977ebfcf3f167e8cd5a81fb6fce4c648a15a5484148c7795fa0"
    )


SMALL_SHARE_2 = bytes.fromhex(
    "703270732d736872000100020002000300000018000000060000000000000002000000000000006600"
    "000000000000c60000000000000126000000000000016600000000000001d4366428776e4b608d6b8b"
    "7b463151b648fb8d14ab3d347de6c248ba1aaef6fed3c23f8e70bf8c90202a49fca870aa87c72a22bc"
    "7daaa5f295a7aa1f9df944cdd4a7b1ad4aeb259316281f4784c08543dcfdee5fe68aa54561bc5ff8e0"
    "2e595dd8bbedd0dae0ee5c758f7f4c13baa94f3b0e03de33d7a753d7b234d829f24cf7c6faa6ac4a6e"
    "d48b68e1c52725bb60c4ff40827cc984e46321d587101e392733b3a81c7c97c6c1e60fd0398daa9b0c"
    "91057bbbee07105298a2ad8f488e4027fc19adbd8887d6a4b133f5710027ba79eef3746cc9008e9312"
    "c4da9a4a0c2bfb668fd23fbcc823d86b1c2b80253f31b725dfcb92cdcd3e724e6895941f7e0c7809d6"
    "b8b747b5038b8a7a1469ad2a530b88fac7ee27081fbb180cb1d200d0ab1c703270732d657874000100"
    "02000300000030000000000000003cf55afacfad9291246a0405dd067ebeafeeaa7941297e4cfcab89"
    "08cea30390f830c73df23d7c70955266f28f896f2511d165f505fed3c23f8e70bf8c90202a49fca870"
    "aa87c72a22bc7daaa5f295a7aa1f9df944"
)


def test_small_share_byte_for_byte() -> None:
    """A whole share, byte for byte (dissected in docs/file-format.md)."""
    p = EncodingParams.create(2, 3, 48)
    cap, shares = encode_bytes(bytes(60), p, key=bytes(32))
    assert cap.to_string() == (
        "p2ps:chk:2:3:60:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa:"
        "isuvjbz5sjzvb7lnhzrrq4n66woxdxljbljih3czf5s4wgjztgwq"
    )
    assert shares[2] == SMALL_SHARE_2
    # decodes from share 2 alone plus one other
    assert read_bytes(cap, {2: shares[2], 0: shares[0]}) == bytes(60)


def test_literal_vector() -> None:
    assert LiteralCap(b"hello").to_string() == "p2ps:lit:nbswy3dp:s3srme2m"
    assert parse_cap("p2ps:lit:nbswy3dp:s3srme2m") == LiteralCap(b"hello")
