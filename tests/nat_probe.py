"""UDP probe run inside a test namespace by tests/nat_topology.py (stdlib only).

It is a standalone program (``python tests/nat_probe.py MODE ...``) because each
network namespace needs its own process. Every mode prints JSON lines on stdout:
first ``{"ready": "host:port"}`` once its socket is bound, then its result.

Modes:
- ``echo --bind H:P``: answer every datagram with ``{"observed": "ip:port"}`` (the
  sender's address as seen here). A line ``ping`` on stdin sends ``{"ping": true}``
  to every address it has heard from (a later datagram from the remote a NAT
  mapping was made for, which the NAT must let through). Runs until stdin closes.
- ``ask --bind H:P --to H:P [--to H:P ...] --listen S``: ask each echo server in
  turn, from one socket, for the address it observes (retrying); print
  ``{"observed": [...]}`` (null where none answered), then keep the socket open S
  seconds (``--until-ping``: or until a ping arrives) and print
  ``{"received": [[data, "ip:port"], ...]}``.
- ``send --bind H:P --to H:P --count N``: send N datagrams 50 ms apart, print
  ``{"sent": N}``.
- ``punch --bind H:P --rendezvous H:P --seconds S --name X``: learn the mapping from
  the echo server at the rendezvous, print ``{"mapping": ...}``, read the peer's
  mapping as one line on stdin, then send datagrams to it every 50 ms (the UDP
  simultaneous open that hole punching relies on), answering with ``seen`` once it
  hears the peer. Print ``{"heard_from": [...], "peer_heard_us": bool}``, stopping
  early once both sides have heard each other.
"""

from __future__ import annotations

import argparse
import json
import select
import socket
import sys
import threading
import time
from typing import Any


def addr_arg(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


def fmt(addr: tuple[str, int]) -> str:
    return f"{addr[0]}:{addr[1]}"


def emit(doc: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(doc) + "\n")
    sys.stdout.flush()


def bound(addr: tuple[str, int]) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(addr)
    emit({"ready": fmt(sock.getsockname())})
    return sock


def recv(sock: socket.socket, timeout: float) -> tuple[dict[str, Any], tuple[str, int]] | None:
    ready, _, _ = select.select([sock], [], [], max(timeout, 0.0))
    if not ready:
        return None
    data, src = sock.recvfrom(2048)
    try:
        doc = json.loads(data)
    except ValueError:
        doc = {"raw": data.decode("latin-1")}
    return (doc if isinstance(doc, dict) else {"raw": doc}), src


def echo(args: argparse.Namespace) -> None:
    sock = bound(args.bind)
    lock = threading.Lock()
    stop = threading.Event()
    seen: set[tuple[str, int]] = set()

    def serve() -> None:
        while not stop.is_set():
            got = recv(sock, 0.2)
            if got is None:
                continue
            src = got[1]
            with lock:
                seen.add(src)
                sock.sendto(json.dumps({"observed": fmt(src)}).encode(), src)

    worker = threading.Thread(target=serve, daemon=True)
    worker.start()
    for line in sys.stdin:  # the harness closes stdin (or kills us) to stop
        if line.strip() == "ping":
            with lock:
                for src in sorted(seen):
                    sock.sendto(json.dumps({"ping": True}).encode(), src)
    stop.set()
    worker.join()


def ask(args: argparse.Namespace) -> None:
    sock = bound(args.bind)
    request = b"{}"
    observed: list[str | None] = []
    for to in args.to:
        seen: str | None = None
        deadline = time.monotonic() + args.timeout
        while seen is None and time.monotonic() < deadline:
            sock.sendto(request, to)
            got = recv(sock, 0.3)
            if got is not None and got[1] == to and "observed" in got[0]:
                seen = got[0]["observed"]
        observed.append(seen)
    emit({"observed": observed})
    received: list[list[str]] = []
    end = time.monotonic() + args.listen
    while (left := end - time.monotonic()) > 0:
        got = recv(sock, left)
        if got is not None:
            received.append([json.dumps(got[0]), fmt(got[1])])
            if args.until_ping and got[0].get("ping"):
                break
    emit({"received": received})


def send(args: argparse.Namespace) -> None:
    sock = bound(args.bind)
    for i in range(args.count):
        sock.sendto(json.dumps({"unsolicited": i}).encode(), args.to)
        time.sleep(0.05)
    emit({"sent": args.count})


def punch(args: argparse.Namespace) -> None:
    sock = bound(args.bind)
    mapping: str | None = None
    deadline = time.monotonic() + 10.0
    while mapping is None and time.monotonic() < deadline:
        sock.sendto(b"{}", args.rendezvous)
        got = recv(sock, 0.3)
        if got is not None and got[1] == args.rendezvous:
            mapping = got[0].get("observed")
    emit({"mapping": mapping})
    line = sys.stdin.readline().strip()
    if not line or mapping is None:
        emit({"heard_from": [], "peer_heard_us": False, "error": "no mapping"})
        return
    peer = addr_arg(line)
    heard: set[str] = set()
    peer_heard_us = False
    done_at: float | None = None
    end = time.monotonic() + args.seconds
    next_send = 0.0
    while (now := time.monotonic()) < end and (done_at is None or now < done_at):
        if now >= next_send:
            sock.sendto(json.dumps({"from": args.name, "seen": bool(heard)}).encode(), peer)
            next_send = now + 0.05
        got = recv(sock, min(next_send, end) - now)
        if got is None:
            continue
        doc, src = got
        if "from" in doc:
            heard.add(fmt(src))
            peer_heard_us = peer_heard_us or bool(doc.get("seen"))
        if heard and peer_heard_us and done_at is None:
            done_at = time.monotonic() + 0.5  # keep sending so the peer sees "seen" too
    emit({"heard_from": sorted(heard), "peer_heard_us": peer_heard_us})


def main() -> None:
    parser = argparse.ArgumentParser(prog="nat_probe")
    sub = parser.add_subparsers(dest="mode", required=True)
    p = sub.add_parser("echo")
    p.add_argument("--bind", type=addr_arg, required=True)
    p.set_defaults(func=echo)
    p = sub.add_parser("ask")
    p.add_argument("--bind", type=addr_arg, required=True)
    p.add_argument("--to", type=addr_arg, action="append", required=True)
    p.add_argument("--timeout", type=float, default=5.0)
    p.add_argument("--listen", type=float, default=0.0)
    p.add_argument("--until-ping", action="store_true")
    p.set_defaults(func=ask)
    p = sub.add_parser("send")
    p.add_argument("--bind", type=addr_arg, required=True)
    p.add_argument("--to", type=addr_arg, required=True)
    p.add_argument("--count", type=int, default=10)
    p.set_defaults(func=send)
    p = sub.add_parser("punch")
    p.add_argument("--bind", type=addr_arg, required=True)
    p.add_argument("--rendezvous", type=addr_arg, required=True)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--name", default="peer")
    p.set_defaults(func=punch)
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
