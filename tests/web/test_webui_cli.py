"""``p2pstore web-url``: a one-time login link from the running node's API, which
logs a browser in exactly once; ``status`` points to it."""

from __future__ import annotations

import http.client
import urllib.parse
from pathlib import Path

import pytest

from p2pstore.testing.memory_app import MemoryApplication

from ..frontends.test_cli_ops import node, run

__all__ = ["node"]  # the fixture, shared with the client CLI tests


def _get(url: str) -> http.client.HTTPResponse:
    parts = urllib.parse.urlsplit(url)
    assert parts.hostname is not None
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    conn.request("GET", parts.path)
    resp = conn.getresponse()
    resp.read()
    conn.close()
    return resp


def test_web_url_prints_a_one_time_login_link(
    node: tuple[Path, MemoryApplication], capsys: pytest.CaptureFixture[str]
) -> None:
    root, _ = node
    rc, out, err = run(capsys, "web-url", "--node", root)
    assert rc == 0, err
    url = out.strip()
    assert url.startswith("http://127.0.0.1:") and "/login/" in url
    assert "one-time" in err
    first = _get(url)
    assert first.status == 200  # "You are logged in", moving on to "/" by itself
    cookie = first.getheader("Set-Cookie") or ""
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert _get(url).status == 403  # spent
    rc, out2, _ = run(capsys, "web-url", str(root))
    assert rc == 0 and out2.strip() != url  # a fresh ticket each time
    rc, out, _ = run(capsys, "status", "--node", root)
    assert "p2pstore web-url" in out


def test_web_url_without_a_running_node(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = run(capsys, "web-url", "--node", tmp_path / "none")
    assert rc == 3 and "no node directory" in err
