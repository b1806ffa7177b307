"""A small synchronous client of a node's local HTTP API (docs/http-api.md).

Used by the CLI and the shell. It finds the node's API from its directory (``--node
DIR``, else ``$P2PSTORE_NODE``, else :func:`default_node_dir`): the running node
publishes its API URL in ``DIR/run/status.json``, the token is ``private/api.token``.

Invariants:
- uploads and downloads stream in bounded chunks (:data:`CHUNK`), never whole;
- a download that ends before its Content-Length is an error
  (:class:`TransferError`), never a silently short file;
- every failure is a :class:`ClientError` with a clear message and the CLI exit
  code it maps to: 3 the node cannot be reached, 1 the call failed;
- the token is sent only to the loopback URL read from the node directory, and is
  never shown in errors or reprs.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import secrets
import socket
import threading
import urllib.parse
import weakref
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Final

from .node.errors import NodeError
from .node.nodedir import ENV_NODE, NodeDir
from .node.nodedir import default_node_dir as default_node_dir  # re-exported (now in node)
from .node.nodedir import resolve_node_dir as resolve_node_dir
from .node.pidfile import probe
from .node.status_file import read_status_file

CHUNK: Final = 256 * 1024
#: a download's read size: the node sends 1 MiB segments
DOWNLOAD_CHUNK: Final = 1 << 20
MAX_JSON_REPLY: Final = 16 << 20
DEFAULT_TIMEOUT: Final = 300.0
#: how often an upload asks the node how much of it is stored
FOLLOW_INTERVAL: Final = 0.25
API: Final = "/api/v1"

EXIT_FAILED: Final = 1
EXIT_UNREACHABLE: Final = 3


class ClientError(Exception):
    """Base of every client failure; ``exit_code`` is what the CLI returns."""

    exit_code: int = EXIT_FAILED


class NodeUnreachable(ClientError):
    """No node directory, node not running, or its API does not answer (exit 3)."""

    exit_code = EXIT_UNREACHABLE


class ApiCallError(ClientError):
    """The API answered with an error: ``status``, ``code``, ``message``."""

    def __init__(
        self, status: int, code: str, message: str, details: Mapping[str, Any] | None = None
    ) -> None:
        super().__init__(f"{message} ({code}, HTTP {status})")
        self.status = status
        self.code = code
        self.message = message
        self.details: dict[str, Any] = dict(details or {})


class TransferError(ClientError):
    """A transfer broke off part-way, or the node answered something unexpected."""


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


def _quote_cap(cap: str) -> str:
    return urllib.parse.quote(cap, safe=":")


class _Reply:
    def __init__(self, conn: http.client.HTTPConnection, resp: http.client.HTTPResponse) -> None:
        self.conn = conn
        self.resp = resp

    def close(self) -> None:
        self.resp.close()
        self.conn.close()


ProgressFn = Callable[[int], None]


class NodeClient:
    """One node's API. Each call uses a fresh connection (simple; calls are few)."""

    def __init__(self, url: str, token: str | None, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme != "http" or not parsed.hostname or parsed.port is None:
            raise ClientError(f"bad API URL {url!r}")
        self.url = url
        self.host = parsed.hostname
        self.port = parsed.port
        self._token = token
        self.timeout = timeout
        self._in_flight: weakref.WeakSet[http.client.HTTPConnection] = weakref.WeakSet()

    @classmethod
    def for_node(cls, node_dir: Path, *, timeout: float = DEFAULT_TIMEOUT) -> NodeClient:
        ep = locate_api(node_dir)
        return cls(ep.url, ep.token, timeout=timeout)

    def __repr__(self) -> str:
        return f"NodeClient({self.url})"

    # -- plumbing ------------------------------------------------------------------
    def _headers(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        h = {"Host": f"{self.host}:{self.port}", "User-Agent": "p2pstore-cli"}
        if self._token:
            h["Authorization"] = f"Bearer {self._token}"
        h.update(extra or {})
        return h

    def _connect(self) -> http.client.HTTPConnection:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        self._in_flight.add(conn)
        return conn

    def abort(self) -> None:
        """Cut every connection in flight (safe from another thread): a call blocked on
        it raises at once, and the node sees the client go, so an upload it has not
        finished is cancelled and nothing is linked (docs/http-api.md, "Cancel")."""
        for conn in list(self._in_flight):
            sock = conn.sock
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def _unreachable(self, e: OSError) -> NodeUnreachable:
        why = "connection refused" if isinstance(e, ConnectionRefusedError) else str(e)
        return NodeUnreachable(f"cannot reach the node's API at {self.url}: {why}")

    def _send(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        stream: Iterator[bytes] | None = None,
        length: int | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> _Reply:
        conn = self._connect()
        h = self._headers(headers)
        try:
            conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
            if body is not None:
                h["Content-Length"] = str(len(body))
            elif stream is not None:
                if length is None:
                    h["Transfer-Encoding"] = "chunked"
                else:
                    h["Content-Length"] = str(length)
            for k, v in h.items():
                conn.putheader(k, v)
            conn.endheaders()
        except OSError as e:
            conn.close()
            raise self._unreachable(e) from None
        try:
            if body:
                conn.send(body)
            elif stream is not None:
                for chunk in stream:
                    if not chunk:
                        continue
                    if length is None:
                        conn.send(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
                    else:
                        conn.send(chunk)
                if length is None:
                    conn.send(b"0\r\n\r\n")
        except OSError as e:
            # The node may have answered early (e.g. a bad token) and closed: read it.
            try:
                return _Reply(conn, conn.getresponse())
            except (OSError, http.client.HTTPException):
                conn.close()
                raise TransferError(f"the upload to {self.url} broke off: {e}") from None
        except BaseException:
            # The source failed or the caller cancelled (e.g. the shell's Ctrl-C): close
            # now, so the node sees the body cut short and stores nothing.
            conn.close()
            raise
        try:
            return _Reply(conn, conn.getresponse())
        except (OSError, http.client.HTTPException) as e:
            conn.close()
            raise TransferError(f"no answer from the node's API at {self.url}: {e}") from None

    def _raise_for(self, reply: _Reply, ok: tuple[int, ...]) -> None:
        if reply.resp.status in ok:
            return
        status = reply.resp.status
        try:
            raw = reply.resp.read(MAX_JSON_REPLY)
            err = json.loads(raw)["error"]
            code, message = str(err["code"]), str(err["message"])
            details = err.get("details")
            details = details if isinstance(details, dict) else {}
        except (OSError, http.client.HTTPException, ValueError, KeyError, TypeError):
            code, message = "http-error", f"HTTP {status} {reply.resp.reason}"
            details = {}
        finally:
            reply.close()
        raise ApiCallError(status, code, message, details)

    def _json_call(
        self,
        method: str,
        path: str,
        payload: Mapping[str, Any] | None = None,
        ok: tuple[int, ...] = (200, 201),
    ) -> Any:
        body = None
        headers = {}
        if payload is not None:
            body = json.dumps(payload).encode()
            headers["Content-Type"] = "application/json"
        reply = self._send(method, path, body=body, headers=headers)
        self._raise_for(reply, ok)
        try:
            return json.loads(reply.resp.read(MAX_JSON_REPLY))
        except (OSError, http.client.HTTPException, ValueError) as e:
            raise TransferError(f"bad reply from the node's API: {e}") from None
        finally:
            reply.close()

    @staticmethod
    def _chunks(source: IO[bytes], progress: ProgressFn | None) -> Iterator[bytes]:
        done = 0
        while chunk := source.read(CHUNK):
            done += len(chunk)
            yield chunk
            if progress:
                progress(done)

    def _download(
        self, path: str, sink: IO[bytes], progress: ProgressFn | None, headers: Mapping[str, str]
    ) -> int:
        tag = secrets.token_hex(8)  # to ask the node why, should the body stop short
        path += ("&" if "?" in path else "?") + f"transfer={tag}"
        reply = self._send("GET", path, headers=headers)
        self._raise_for(reply, (200, 206))
        try:
            expected = reply.resp.length
            done = 0
            # one buffer, read into and written from in place: no bytes object per chunk
            view = memoryview(bytearray(DOWNLOAD_CHUNK))
            while True:
                try:
                    n = reply.resp.readinto(view)  # 0 at the end, or where the body stops
                except http.client.IncompleteRead as e:
                    done += len(e.partial)
                    break
                except OSError as e:
                    raise TransferError(f"the download broke off after {done} bytes: {e}") from None
                if not n:
                    break
                sink.write(view[:n])
                done += n
                if progress:
                    progress(done)
            if expected is not None and done != expected:
                why = self._why_broken(tag)
                raise TransferError(
                    f"the download broke off after {done} of {expected} bytes: "
                    + (why or "the node could not read the rest (see its log)")
                )
            return done
        finally:
            reply.close()

    def _why_broken(self, tag: str) -> str | None:
        """The node's reason a tagged download stopped short, if it can say."""
        try:
            doc = self._json_call("GET", f"{API}/transfer/{tag}")
        except (ClientError, OSError):
            return None
        reason = doc.get("reason") if isinstance(doc, dict) else None
        return reason if isinstance(reason, str) and reason else None

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
        route = f"{API}/file/{_quote_cap(write_cap)}"
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
            if isinstance(source, str):
                reply = self._send(method, target, body=b"", headers=headers)
            else:
                stream = self._chunks(source, progress)
                reply = self._send(method, target, stream=stream, length=size, headers=headers)
            return self._finish_json(reply)

    @contextlib.contextmanager
    def _follow(self, params: dict[str, str], stored: ProgressFn | None) -> Iterator[None]:
        """While the block runs, poll the node for the upload's stored bytes (tagged
        with a fresh ``transfer`` token added to ``params``) and report them."""
        if stored is None:
            yield
            return
        tag = secrets.token_hex(8)
        params["transfer"] = tag
        stop = threading.Event()

        def poll() -> None:
            while not stop.wait(FOLLOW_INTERVAL):
                try:
                    doc = self._json_call("GET", f"{API}/transfer/{tag}")
                except (ClientError, OSError):
                    continue  # not registered yet, or finished and gone: try again
                if isinstance(doc, dict) and isinstance(doc.get("stored"), int):
                    stored(doc["stored"])

        poller = threading.Thread(target=poll, name="p2pstore-upload-progress", daemon=True)
        poller.start()
        try:
            yield
        finally:
            stop.set()
            poller.join(5)

    def _finish_json(self, reply: _Reply) -> dict[str, Any]:
        self._raise_for(reply, (200, 201))
        try:
            doc: dict[str, Any] = json.loads(reply.resp.read(MAX_JSON_REPLY))
            return doc
        except (OSError, http.client.HTTPException, ValueError) as e:
            raise TransferError(f"bad reply from the node's API: {e}") from None
        finally:
            reply.close()

    def get(
        self,
        cap: str,
        sink: IO[bytes],
        *,
        progress: ProgressFn | None = None,
        range_header: str | None = None,
    ) -> int:
        headers = {"Range": range_header} if range_header else {}
        return self._download(f"{API}/file/{_quote_cap(cap)}", sink, progress, headers)

    def info(self, cap: str) -> dict[str, Any]:
        result: dict[str, Any] = self._json_call("GET", f"{API}/info/{_quote_cap(cap)}")
        return result

    def check(self, cap: str, *, verify: bool = False, repair: bool = False) -> dict[str, Any]:
        q = urllib.parse.urlencode({"verify": str(verify).lower(), "repair": str(repair).lower()})
        method = "POST" if repair else "GET"
        result: dict[str, Any] = self._json_call(method, f"{API}/check/{_quote_cap(cap)}?{q}")
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
