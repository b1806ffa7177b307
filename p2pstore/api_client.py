"""A small synchronous client of a node's local HTTP API (docs/http-api.md).

Used by the CLI and the shell. It finds the node's API from its directory (``--node
DIR``, else ``$P2PSTORE_NODE``, else :func:`default_node_dir`): the running node
publishes its API URL in ``DIR/run/status.json``, the token is ``private/api.token``.

The HTTP plumbing is :class:`p2pstore.api_http.HttpApi`. Invariants:
- uploads and downloads stream in bounded chunks, never whole;
- an upload's reply is awaited as long as the node says it works on the upload
  (placing a large file over a slow uplink takes far longer than the socket
  timeout); a silent node is given up on after ``timeout``;
- a download that ends before its Content-Length is an error
  (:class:`TransferError`), never a silently short file;
- every failure is a :class:`ClientError` with a clear message and the CLI exit
  code it maps to: 3 the node cannot be reached, 1 the call failed;
- the token is sent only to the loopback URL read from the node directory, and is
  never shown in errors or reprs.
"""

from __future__ import annotations

import os
import secrets
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from .api_http import API, DEFAULT_TIMEOUT, HttpApi, quote_cap
from .api_http import EXIT_FAILED as EXIT_FAILED  # re-exported: the client's errors, codes
from .api_http import EXIT_UNREACHABLE as EXIT_UNREACHABLE
from .api_http import ApiCallError as ApiCallError
from .api_http import ClientError as ClientError
from .api_http import NodeUnreachable as NodeUnreachable
from .api_http import ProgressFn as ProgressFn
from .api_http import TransferError as TransferError
from .node.errors import NodeError
from .node.nodedir import ENV_NODE, NodeDir
from .node.nodedir import default_node_dir as default_node_dir  # re-exported (now in node)
from .node.nodedir import resolve_node_dir as resolve_node_dir
from .node.pidfile import probe
from .node.status_file import read_status_file


@dataclass(frozen=True, slots=True)
class ApiEndpoint:
    url: str
    token: str = field(repr=False)


def locate_api(node_dir: Path) -> ApiEndpoint:
    """The running node's API URL and token; :class:`NodeUnreachable` if none."""
    nd = NodeDir(node_dir)
    if not nd.config_path.is_file():
        raise NodeUnreachable(
            f"no node directory at {node_dir} (create one with `p2pstore create-node DIR`, "
            f"then use --node DIR or set {ENV_NODE})"
        )
    if not probe(nd.pid_path).running:
        raise NodeUnreachable(
            f"no node is running in {node_dir}; start it with `p2pstore start {node_dir}`"
        )
    doc = read_status_file(nd) or {}
    url = doc.get("api_url")
    if not isinstance(url, str) or not url.startswith("http://127.0.0.1:"):
        state = doc.get("state", "unknown")
        raise NodeUnreachable(
            f"the node in {node_dir} is not serving its HTTP API (state: {state}); "
            "if it is starting, try again in a moment"
        )
    try:
        token = nd.load_api_token()
    except NodeError as e:
        raise ClientError(f"cannot read the API token: {e}") from None
    return ApiEndpoint(url, token)


class NodeClient(HttpApi):
    """One node's API. Each call uses a fresh connection (simple; calls are few)."""

    @classmethod
    def for_node(cls, node_dir: Path, *, timeout: float = DEFAULT_TIMEOUT) -> NodeClient:
        ep = locate_api(node_dir)
        return cls(ep.url, ep.token, timeout=timeout)

    # -- files by cap --------------------------------------------------------------
    def put(
        self,
        source: IO[bytes] | str,
        *,
        size: int | None = None,
        mode: str = "convergent",
        progress: ProgressFn | None = None,
        stored: ProgressFn | None = None,
        name: str | None = None,
    ) -> dict[str, Any]:
        """``progress``: bytes sent; ``stored``: bytes the node has encoded and placed
        (a convergent upload places only after the whole body: docs/http-api.md);
        ``name``: the local file's name, shown in the node's transfer list."""
        params = {"mode": mode}
        if name:
            params["filename"] = name
        return self._upload("POST", f"{API}/file", params, source, size, progress, stored)

    def put_mutable(
        self,
        source: IO[bytes],
        *,
        write_cap: str | None = None,
        size: int | None = None,
        expected_sequence: int | None = None,
        directory: bool = False,
        progress: ProgressFn | None = None,
        stored: ProgressFn | None = None,
    ) -> dict[str, Any]:
        """A new mutable file (``write_cap`` None) or the next version of one
        (docs/mutable.md); the body is always sent (a node never reads it in place)."""
        params: dict[str, str] = {}
        if expected_sequence is not None:
            params["expected_sequence"] = str(expected_sequence)
        if write_cap is None:
            params |= {"mutable": "true", "dir": "true" if directory else "false"}
            return self._upload("POST", f"{API}/file", params, source, size, progress, stored)
        route = f"{API}/file/{quote_cap(write_cap)}"
        return self._upload("PUT", route, params, source, size, progress, stored)

    def _upload(
        self,
        method: str,
        route: str,
        params: dict[str, str],
        source: IO[bytes] | str,
        size: int | None,
        progress: ProgressFn | None,
        stored: ProgressFn | None,
    ) -> dict[str, Any]:
        """Stream ``source`` (or, a ``str``, have the node read that local file: docs/
        http-api.md "Local files") to ``method route?params``; the JSON reply."""
        headers = {"Content-Type": "application/octet-stream"}
        if isinstance(source, str):  # the node checks it sees the same file
            st = os.stat(source)
            params["local_path"] = source
            params["local_id"] = f"{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}"
        with self._follow(params, stored):
            target = f"{route}?{urllib.parse.urlencode(params)}"
            tag = params["transfer"]
            if isinstance(source, str):
                reply = self._send(method, target, body=b"", headers=headers, tag=tag)
            else:
                stream = self._chunks(source, progress)
                reply = self._send(
                    method, target, stream=stream, length=size, headers=headers, tag=tag
                )
            return self._finish_json(reply)

    def get(
        self,
        cap: str,
        sink: IO[bytes],
        *,
        progress: ProgressFn | None = None,
        range_header: str | None = None,
    ) -> int:
        headers = {"Range": range_header} if range_header else {}
        return self._download(f"{API}/file/{quote_cap(cap)}", sink, progress, headers)

    def info(self, cap: str) -> dict[str, Any]:
        result: dict[str, Any] = self._json_call("GET", f"{API}/info/{quote_cap(cap)}")
        return result

    def check(self, cap: str, *, verify: bool = False, repair: bool = False) -> dict[str, Any]:
        """A file's health; reading every share (``verify``) or regenerating lost ones
        (``repair``) can take minutes over a home link: the reply is awaited as long as
        the node works on it (a tagged ``check`` transfer)."""
        tag = secrets.token_hex(8)
        q = urllib.parse.urlencode(
            {"verify": str(verify).lower(), "repair": str(repair).lower(), "transfer": tag}
        )
        method = "POST" if repair else "GET"
        route = f"{API}/check/{quote_cap(cap)}?{q}"
        result: dict[str, Any] = self._json_call(method, route, tag=tag)
        return result

    def pin(self, cap: str, label: str = "") -> dict[str, Any]:
        result: dict[str, Any] = self._json_call(
            "POST", f"{API}/pins", {"cap": cap, "label": label}
        )
        return result

    def unpin(self, cap: str) -> dict[str, Any]:
        result: dict[str, Any] = self._json_call("POST", f"{API}/pins/remove", {"cap": cap})
        return result

    def pins(self) -> list[dict[str, Any]]:
        result: dict[str, Any] = self._json_call("GET", f"{API}/pins")
        return list(result["pins"])

    def features(self) -> set[str]:
        """What the node's API offers beyond the first routes (``GET /api/v1/``)."""
        return {str(f) for f in self._json_call("GET", f"{API}/").get("features", ())}

    def status(self) -> dict[str, Any]:
        result: dict[str, Any] = self._json_call("GET", f"{API}/status")
        return result

    def bootstrap(self) -> dict[str, Any]:
        """The node's bootstrap list text and, for an introducer, its own line."""
        result: dict[str, Any] = self._json_call("GET", f"{API}/bootstrap")
        return result

    def peers(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._json_call("GET", f"{API}/peers")["peers"]
        return result

    # -- virtual drive -------------------------------------------------------------
    def ls(self, path: str) -> dict[str, Any]:
        q = urllib.parse.urlencode({"path": path})
        result: dict[str, Any] = self._json_call("GET", f"{API}/vdrive/ls?{q}")
        return result

    def stat(self, path: str) -> dict[str, Any]:
        q = urllib.parse.urlencode({"path": path})
        result: dict[str, Any] = self._json_call("GET", f"{API}/vdrive/stat?{q}")
        return result

    # Each change takes an optional ``op_id`` (32 hex digits): the node makes a change
    # with an id it has seen once, and ``outcome`` says what became of it
    # (p2pstore.api_changes retries and asks; docs/http-api.md, "Outcomes").
    def _change(self, route: str, body: dict[str, Any], op_id: str | None) -> dict[str, Any]:
        if op_id is not None:
            body["op_id"] = op_id
        result: dict[str, Any] = self._json_call("POST", f"{API}/vdrive/{route}", body)
        return result

    def mkdir(
        self,
        path: str,
        *,
        parents: bool = False,
        expected_sequence: int | None = None,
        op_id: str | None = None,
    ) -> dict[str, Any]:
        body = {"path": path, "parents": parents, "expected_sequence": expected_sequence}
        return self._change("mkdir", body, op_id)

    def link(
        self,
        path: str,
        cap: str,
        *,
        replace: bool = False,
        expected_sequence: int | None = None,
        op_id: str | None = None,
    ) -> dict[str, Any]:
        body = {
            "path": path,
            "cap": cap,
            "replace": replace,
            "expected_sequence": expected_sequence,
        }
        return self._change("link", body, op_id)

    def unlink(
        self,
        path: str,
        *,
        recursive: bool = False,
        expected_sequence: int | None = None,
        op_id: str | None = None,
    ) -> dict[str, Any]:
        body = {"path": path, "recursive": recursive, "expected_sequence": expected_sequence}
        return self._change("unlink", body, op_id)

    def rename(
        self,
        src: str,
        dst: str,
        *,
        replace: bool = False,
        expected_sequence: int | None = None,
        op_id: str | None = None,
    ) -> dict[str, Any]:
        body = {"src": src, "dst": dst, "replace": replace, "expected_sequence": expected_sequence}
        return self._change("rename", body, op_id)

    def outcome(self, drive: str, op_id: str) -> dict[str, Any]:
        """``{"applied": bool, "sequence": n}`` for the change with ``op_id``; one
        not made by now never will be."""
        return self._change("outcome", {"drive": drive}, op_id)

    def make_dir(self, entries: list[dict[str, Any]]) -> dict[str, Any]:
        """Store a whole directory object (``{name, kind, cap, mtime?, mode?}`` each);
        ``{"cap": dircap, "verify_cap"}``, linked nowhere (docs/backup.md)."""
        result: dict[str, Any] = self._json_call("POST", f"{API}/dir", {"entries": entries})
        return result

    def put_path(
        self,
        source: IO[bytes] | str,
        path: str,
        *,
        size: int | None = None,
        mode: str = "convergent",
        replace: bool = True,
        expected_sequence: int | None = None,
        progress: ProgressFn | None = None,
        stored: ProgressFn | None = None,
        op_id: str | None = None,
    ) -> dict[str, Any]:
        params: dict[str, str] = {"path": path, "mode": mode, "replace": str(replace).lower()}
        if expected_sequence is not None:
            params["expected_sequence"] = str(expected_sequence)
        if op_id is not None:
            params["op_id"] = op_id
        return self._upload("PUT", f"{API}/vdrive/file", params, source, size, progress, stored)

    def get_path(self, path: str, sink: IO[bytes], *, progress: ProgressFn | None = None) -> int:
        q = urllib.parse.urlencode({"path": path})
        return self._download(f"{API}/vdrive/file?{q}", sink, progress, {})
