"""Identity primitives: Ed25519 sign/verify and node-ID derivation rates (JSON lines)."""

from __future__ import annotations

import json
import time

from quic_transport.identity import NodeId, NodeKey, verify_signature


def _rate(fn: object, n: int) -> float:
    assert callable(fn)
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return n / (time.perf_counter() - t0)


def main() -> None:
    key = NodeKey.generate()
    msg = b"x" * 64
    sig = key.sign(msg)
    n = 5000
    print(
        json.dumps(
            {"bench": "identity", "op": "sign", "per_s": round(_rate(lambda: key.sign(msg), n))}
        )
    )
    print(
        json.dumps(
            {
                "bench": "identity",
                "op": "verify",
                "per_s": round(_rate(lambda: verify_signature(key.public_key, msg, sig), n)),
            }
        )
    )
    print(
        json.dumps(
            {
                "bench": "identity",
                "op": "node_id",
                "per_s": round(_rate(lambda: NodeId.from_public_key(key.public_key), n)),
            }
        )
    )


if __name__ == "__main__":
    main()
