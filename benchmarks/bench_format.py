"""Immutable-file format throughput and memory (JSON lines).

Encode and decode MB/s of plaintext for a 256 MiB input at the default parameters
(k=3, N=10, 1 MiB segments), beside the bare stages measured in the same run on the
same segment and block sizes: AES-256-CTR (`cryptography`), the check blocks (the
Encoder's coder: the SIMD kernel where built) and zfec encode/decode, and
the SHA-256 hashing the format does (ciphertext tree + every block). Then peak RSS
of a streaming encode and decode of 64 MiB and 1 GiB inputs, each in a fresh
subprocess. Input is generated on the fly from a small random pool, never held.

    python -m benchmarks format                 # everything
    python -m benchmarks.bench_format --size-mib 64 --mem-sizes 64
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import zfec

from p2pstore.immutable import (
    HEADER_SIZE,
    EncodedSegment,
    Encoder,
    EncodeResult,
    EncodingParams,
    ReadCap,
    RemoteError,
    encode_chunks,
    parse_cap,
    random_key,
    read_plaintext,
)
from p2pstore.immutable.allocator import tune_allocator
from p2pstore.immutable.crypto import TAG_BLOCK, TAG_SEGMENT, keystream_cipher, tagged_hash
from p2pstore.immutable.gf256 import check_decoder, check_encoder

MIB = 1 << 20
_POOL = os.urandom(9 * MIB)


def chunks(total: int, size: int = MIB) -> Iterator[memoryview]:
    """``total`` bytes of pseudo-random input in ``size`` pieces, generated on the fly."""
    view = memoryview(_POOL)
    i = 0
    left = total
    while left > 0:
        n = min(size, left)
        off = (i * 4_099_999) % (8 * MIB)
        yield view[off : off + n]
        left -= n
        i += 1


def emit(**kw: object) -> None:
    print(json.dumps({"bench": "format", **kw}), flush=True)


@dataclass(frozen=True)
class Span:
    """Elapsed wall-clock and process CPU seconds (CPU of all threads)."""

    wall: float
    cpu: float


def _now() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def _since(t: tuple[float, float]) -> Span:
    return Span(time.perf_counter() - t[0], time.process_time() - t[1])


def mbps(nbytes: int, span: Span) -> float:
    """Wall-clock MiB/s."""
    return round(nbytes / MIB / span.wall, 1)


def cpu_mbps(nbytes: int, span: Span) -> float:
    """MiB per CPU-second: steadier than wall time when other work shares the cores."""
    return round(nbytes / MIB / max(span.cpu, 1e-9), 1)


# -- bare stages ----------------------------------------------------------------------
def bare_stages(total: int, p: EncodingParams) -> dict[str, tuple[float, float]]:
    """Per stage: (wall MiB/s, MiB per CPU-second)."""
    s, k, n = p.segment_size, p.k, p.n
    segs = [bytes(c) for c in chunks(8 * s, s)]
    nseg = total // s
    key = random_key()
    out: dict[str, Span] = {}

    t = _now()
    ctx = keystream_cipher(key, 0)
    for j in range(nseg):
        ctx.update(segs[j % 8])
    out["aes_ctr"] = _since(t)

    bs = p.block_size
    prims = [tuple(seg[i * bs : (i + 1) * bs] for i in range(k)) for seg in segs]
    checks = tuple(range(k, n))
    # the coder the Encoder uses (the SIMD kernel where built), then zfec itself
    coder = check_encoder(k, n)
    for name, enc in (("check_encode", coder), ("zfec_encode", zfec.Encoder(k, n))):
        t = _now()
        for j in range(nseg):
            enc.encode(prims[j % 8], checks)
        out[name] = _since(t)

    blocks = list(prims[0]) + coder.encode(prims[0], checks)
    t = _now()
    for j in range(nseg):
        tagged_hash(TAG_SEGMENT, segs[j % 8])
        for b in blocks:
            tagged_hash(TAG_BLOCK, b)
    out["sha256_encode"] = _since(t)

    t = _now()
    for j in range(nseg):
        hashlib.sha256(segs[j % 8]).digest()
    out["sha256_plaintext"] = _since(t)

    worst = tuple(range(n - k, n))
    wblocks = tuple(blocks[i] for i in worst)
    # the decoder the reader uses (the SIMD kernel where built), then zfec itself
    for name, dec in (
        ("check_decode_nonprimary", check_decoder(k, n)),
        ("zfec_decode_nonprimary", zfec.Decoder(k, n)),
    ):
        t = _now()
        for _ in range(nseg):
            dec.decode(wblocks, worst)
        out[name] = _since(t)

    t = _now()
    for j in range(nseg):
        tagged_hash(TAG_SEGMENT, segs[j % 8])
        for b in wblocks:
            tagged_hash(TAG_BLOCK, b)
    out["sha256_decode"] = _since(t)
    return {name: (mbps(nseg * s, sp), cpu_mbps(nseg * s, sp)) for name, sp in out.items()}


def combined(*rates: float) -> float:
    """Throughput of running the stages back to back (harmonic sum)."""
    return round(1 / sum(1 / r for r in rates), 1)


# -- pipeline ----------------------------------------------------------------------------
class ShareSink:
    """Keeps some shares whole (in memory or in files); discards the rest."""

    def __init__(self, keep: tuple[int, ...], directory: Path | None = None) -> None:
        self.keep = keep
        self.mem: dict[int, bytearray] = {}
        self.files: dict[int, int] = {}
        for i in keep:
            if directory is None:
                self.mem[i] = bytearray(HEADER_SIZE)
            else:
                self.files[i] = os.open(directory / f"share{i}", os.O_RDWR | os.O_CREAT, 0o600)

    def write(self, i: int, offset: int, data: bytes) -> None:
        if i in self.mem:
            buf = self.mem[i]
            if offset == len(buf):
                buf += data
            else:
                buf[offset : offset + len(data)] = data
        elif i in self.files:
            os.pwrite(self.files[i], data, offset)

    def take(self, item: EncodedSegment | EncodeResult) -> ReadCap | None:
        if isinstance(item, EncodedSegment):
            for i in self.keep:
                self.write(i, item.share_offset, item.blocks[i])
            return None
        for t in item.trailers:
            self.write(t.share_number, t.trailer_offset, t.trailer)
            self.write(t.share_number, 0, t.header)
        assert isinstance(item.cap, ReadCap)
        return item.cap

    def read(self, share_number: int, offset: int, length: int) -> bytes:
        if share_number in self.mem:
            return bytes(self.mem[share_number][offset : offset + length])
        if share_number in self.files:
            return os.pread(self.files[share_number], length, offset)
        raise RemoteError(f"share {share_number} not kept")


def run_encode(total: int, p: EncodingParams, threads: int, sink: ShareSink) -> ReadCap:
    pool = ThreadPoolExecutor(threads) if threads else None
    try:
        enc = Encoder(random_key(), p, executor=pool)
        cap = None
        for item in encode_chunks(enc, chunks(total)):
            cap = sink.take(item) or cap
    finally:
        if pool:
            pool.shutdown()
    assert cap is not None
    return cap


def run_decode(cap: ReadCap, sink: ShareSink, threads: int) -> int:
    pool = ThreadPoolExecutor(threads) if threads else None
    n = 0
    try:
        for piece in read_plaintext(cap, sink, sink.keep, executor=pool):
            n += len(piece)
    finally:
        if pool:
            pool.shutdown()
    return n


def _report(stage: str, total: int, span: Span, bare: tuple[float, float], **kw: object) -> None:
    wall, cpu = mbps(total, span), cpu_mbps(total, span)
    emit(
        stage=stage,
        **kw,
        input_mib=total // MIB,
        mb_s=wall,
        cpu_mb_s=cpu,
        vs_bare_combined=round(wall / bare[0], 2),
        cpu_vs_bare_combined_cpu=round(cpu / bare[1], 2),
    )


def pipeline(total: int, p: EncodingParams, bare: dict[str, tuple[float, float]]) -> None:
    def both(*names: str) -> tuple[float, float]:
        return (
            combined(*(bare[n][0] for n in names)),
            combined(*(bare[n][1] for n in names)),
        )

    enc_bare = both("aes_ctr", "check_encode", "sha256_encode")
    emit(
        stage="bare_encode_combined",
        mb_s=enc_bare[0],
        cpu_mb_s=enc_bare[1],
        note="aes + check blocks (the Encoder's coder) + sha256 back to back (harmonic sum)",
    )
    for threads in (0, 1):
        t = _now()
        run_encode(total, p, threads, ShareSink(()))
        _report("encode", total, _since(t), enc_bare, mode="random-key", worker_threads=threads)
    t = _now()
    pool = ThreadPoolExecutor(1)
    enc = Encoder.convergent(bytes(32), chunks(total), p, executor=pool)
    for _ in encode_chunks(enc, chunks(total)):
        pass
    pool.shutdown()
    conv_bare = both("aes_ctr", "check_encode", "sha256_encode", "sha256_plaintext")
    _report("encode", total, _since(t), conv_bare, mode="convergent (2 passes)", worker_threads=1)
    for keep, names in (
        ((0, 1, 2), ("aes_ctr", "sha256_decode")),
        ((7, 8, 9), ("aes_ctr", "check_decode_nonprimary", "sha256_decode")),
    ):
        dec_bare = both(*names)
        emit(
            stage="bare_decode_combined", shares=list(keep), mb_s=dec_bare[0], cpu_mb_s=dec_bare[1]
        )
        sink = ShareSink(keep)
        cap = run_encode(total, p, 1, sink)
        for threads in (0, 2):
            t = _now()
            assert run_decode(cap, sink, threads) == total
            _report("decode", total, _since(t), dec_bare, shares=list(keep), worker_threads=threads)
        del sink


def segment_sweep(total: int) -> None:
    """Encode/decode MB/s against segment size (how the default was chosen)."""
    for req in (128 << 10, 256 << 10, 512 << 10, MIB, 2 * MIB, 4 * MIB):
        p = EncodingParams.create(3, 10, req)
        sink = ShareSink((0, 5, 9))
        t = _now()
        cap = run_encode(total, p, 0, sink)
        enc = _since(t)
        t = _now()
        assert run_decode(cap, sink, 0) == total
        dec = _since(t)
        emit(
            stage="segment_sweep",
            segment_size=p.segment_size,
            input_mib=total // MIB,
            worker_threads=0,
            encode_mb_s=mbps(total, enc),
            encode_cpu_mb_s=cpu_mbps(total, enc),
            decode_mb_s_shares_0_5_9=mbps(total, dec),
            decode_cpu_mb_s=cpu_mbps(total, dec),
        )


# -- peak memory (subprocesses) -----------------------------------------------------------
def peak_rss_mib() -> float:
    """This process's peak RSS. VmHWM, not ru_maxrss: Linux carries ru_maxrss over
    from the parent across fork+exec, which would report the parent's peak."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def child(op: str, mib: int, directory: Path) -> None:
    tune_allocator()
    p = EncodingParams()
    keep = (0, 8, 9) if op != "none" else ()
    sink = ShareSink(keep, directory)
    t = _now()
    if op == "none":
        emit(
            stage="peak_rss", op="baseline (imports, 9 MiB input pool)", peak_rss_mib=peak_rss_mib()
        )
        return
    if op == "encode":
        cap = run_encode(mib * MIB, p, 1, sink)
        (directory / "cap").write_text(cap.to_string())
    else:
        cap2 = parse_cap((directory / "cap").read_text())
        assert isinstance(cap2, ReadCap)
        assert run_decode(cap2, sink, 2) == mib * MIB
    span = _since(t)
    emit(
        stage="peak_rss",
        op=op,
        input_mib=mib,
        peak_rss_mib=peak_rss_mib(),
        mb_s=mbps(mib * MIB, span),
    )


def memory(sizes: list[int]) -> None:
    cmd = [sys.executable, "-m", "benchmarks.bench_format", "--child"]
    subprocess.run([*cmd, "none", "0", "."], check=True)
    for mib in sizes:
        with tempfile.TemporaryDirectory(prefix="bench-format-") as d:
            for op in ("encode", "decode"):
                subprocess.run([*cmd, op, str(mib), d], check=True)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mib", type=int, default=256)
    ap.add_argument("--mem-sizes", default="64,1024")
    ap.add_argument("--sweep-mib", type=int, default=64, help="0 skips the segment sweep")
    ap.add_argument("--child", nargs=3, metavar=("OP", "MIB", "DIR"))
    args = ap.parse_args(argv)
    if args.child:
        child(args.child[0], int(args.child[1]), Path(args.child[2]))
        return
    tuned = tune_allocator()
    p = EncodingParams()
    emit(stage="params", k=p.k, n=p.n, segment_size=p.segment_size, malloc_tuned=tuned)
    total = args.size_mib * MIB
    bare = bare_stages(total, p)
    for name, (wall, cpu) in bare.items():
        emit(stage=f"bare_{name}", mb_s=wall, cpu_mb_s=cpu)
    pipeline(total, p, bare)
    if args.sweep_mib:
        segment_sweep(args.sweep_mib * MIB)
    memory([int(x) for x in args.mem_sizes.split(",") if x])


if __name__ == "__main__":
    main()
