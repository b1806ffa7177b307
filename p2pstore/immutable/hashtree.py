"""Merkle hash trees: complete binary trees over padded leaves, stored as arrays.

Invariants (docs/file-format.md, "Hash trees"):
- A tree over ``n >= 1`` leaf hashes has ``L = next_power_of_two(n)`` leaf slots;
  slots ``n..L-1`` hold :data:`PAD_HASH`. Nodes are numbered breadth first: node 0 is
  the root, the children of node ``i`` are ``2i+1`` and ``2i+2``, leaf ``j`` is node
  ``L-1+j``. An internal node is ``H_node(left || right)``.
- The serialized tree is all ``2L-1`` node hashes concatenated in index order.
- An uncle chain for leaf ``j`` lists the sibling of every node on the path from
  the leaf up to (not including) the root, leaf end first; its length is ``log2 L``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from p2pstore.immutable.crypto import HASH_BYTES, TAG_NODE, TAG_PAD, tagged_hash
from p2pstore.immutable.errors import ParameterError

PAD_HASH = tagged_hash(TAG_PAD)

#: Refuse trees with more leaf slots than this (2^44 segments covers MAX_FILE_SIZE
#: with 64-byte segments); bounds the memory and loops driven by untrusted sizes.
MAX_LEAVES = 1 << 48


def next_power_of_two(n: int) -> int:
    if n < 1 or n > MAX_LEAVES:
        raise ParameterError(f"hash tree must have 1..{MAX_LEAVES} leaves, got {n}")
    return 1 << (n - 1).bit_length()


def tree_depth(n: int) -> int:
    """Number of uncles in a chain (the tree height) for ``n`` leaves."""
    return next_power_of_two(n).bit_length() - 1


def tree_size(n: int) -> int:
    """Serialized size in bytes of a tree over ``n`` leaves."""
    return (2 * next_power_of_two(n) - 1) * HASH_BYTES


def node_hash(left: bytes, right: bytes) -> bytes:
    return tagged_hash(TAG_NODE, left, right)


def build_tree(leaves: Sequence[bytes]) -> list[bytes]:
    """All ``2L-1`` nodes of the tree over ``leaves`` (index order)."""
    n = len(leaves)
    slots = next_power_of_two(n)
    nodes: list[bytes] = [b""] * (slots - 1) + list(leaves) + [PAD_HASH] * (slots - n)
    for i in range(slots - 2, -1, -1):
        nodes[i] = node_hash(nodes[2 * i + 1], nodes[2 * i + 2])
    return nodes


def uncle_indices(n: int, leaf: int) -> list[int]:
    """Node indexes of the uncle chain of ``leaf`` in a tree over ``n`` leaves."""
    slots = next_power_of_two(n)
    if not 0 <= leaf < n:
        raise ParameterError(f"leaf {leaf} out of range for a tree of {n} leaves")
    out = []
    i = slots - 1 + leaf
    while i > 0:
        out.append(i + 1 if i % 2 else i - 1)
        i = (i - 1) // 2
    return out


def leaf_index(n: int, leaf: int) -> int:
    """Node index of ``leaf``."""
    if not 0 <= leaf < n:
        raise ParameterError(f"leaf {leaf} out of range for a tree of {n} leaves")
    return next_power_of_two(n) - 1 + leaf


def uncle_chain(nodes: Sequence[bytes], n: int, leaf: int) -> bytes:
    """The serialized uncle chain (concatenated hashes) of ``leaf``."""
    return b"".join(nodes[i] for i in uncle_indices(n, leaf))


def root_from_chain(leaf_value: bytes, n: int, leaf: int, chain: bytes) -> bytes:
    """Climb from ``leaf_value`` at position ``leaf`` using the serialized ``chain``.

    Raises ParameterError if the chain has the wrong length for the tree shape; the
    caller compares the result with the trusted root.
    """
    depth = tree_depth(n)
    if len(chain) != depth * HASH_BYTES:
        raise ParameterError(
            f"uncle chain is {len(chain)} bytes, expected {depth * HASH_BYTES} ({depth} hashes)"
        )
    if not 0 <= leaf < n:
        raise ParameterError(f"leaf {leaf} out of range for a tree of {n} leaves")
    h = leaf_value
    i = next_power_of_two(n) - 1 + leaf
    for d in range(depth):
        uncle = chain[d * HASH_BYTES : (d + 1) * HASH_BYTES]
        h = node_hash(uncle, h) if i % 2 == 0 else node_hash(h, uncle)
        i = (i - 1) // 2
    return h


def verify_tree(serialized: bytes, n: int, root: bytes) -> list[bytes] | None:
    """Check a whole serialized tree over ``n`` leaves: every internal node is the
    hash of its children, every padding slot holds PAD_HASH and node 0 equals
    ``root``. Returns the leaf hashes, or None if any byte is wrong."""
    slots = next_power_of_two(n)
    if len(serialized) != (2 * slots - 1) * HASH_BYTES:
        return None
    nodes = [serialized[i : i + HASH_BYTES] for i in range(0, len(serialized), HASH_BYTES)]
    if nodes[0] != root or any(x != PAD_HASH for x in nodes[slots - 1 + n :]):
        return None
    for i in range(slots - 1):
        if nodes[i] != node_hash(nodes[2 * i + 1], nodes[2 * i + 2]):
            return None
    return nodes[slots - 1 : slots - 1 + n]


def check_tree_chunked(
    read_nodes: Callable[[int, int], bytes], n: int, root: bytes, chunk: int = 4096
) -> bool:
    """:func:`verify_tree` for a tree too large to hold: ``read_nodes(first, count)``
    returns ``count`` serialized nodes from node index ``first``. Memory stays
    O(chunk) nodes. The caller checks the leaves against their data separately."""
    slots = next_power_of_two(n)
    if read_nodes(0, 1) != root:
        return False
    for a in range(0, slots - 1, chunk):
        b = min(a + chunk, slots - 1)
        parents = read_nodes(a, b - a)
        children = read_nodes(2 * a + 1, 2 * (b - a))
        if len(parents) != (b - a) * HASH_BYTES or len(children) != 2 * len(parents):
            return False
        for x in range(b - a):
            left = children[2 * x * HASH_BYTES : (2 * x + 1) * HASH_BYTES]
            right = children[(2 * x + 1) * HASH_BYTES : (2 * x + 2) * HASH_BYTES]
            if parents[x * HASH_BYTES : (x + 1) * HASH_BYTES] != node_hash(left, right):
                return False
    first_pad = slots - 1 + n
    for a in range(first_pad, 2 * slots - 1, chunk):
        count = min(chunk, 2 * slots - 1 - a)
        if read_nodes(a, count) != PAD_HASH * count:
            return False
    return True
