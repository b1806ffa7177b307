"""The HTTP plumbing of :class:`p2pstore.api_client.NodeClient`: one connection per
call, the token header, errors mapped to :class:`ClientError` (with the CLI exit
code), transfers streamed in bounded chunks (:data:`CHUNK`), and uploads followed
by their ``?transfer=`` tag: their progress polled, and their reply awaited for as
long as the node says the upload runs, however long placing it over a slow uplink
takes (docs/http-api.md, "Following an upload or a download").
"""

from __future__ import annotations

import contextlib
import http.client
import json
import secrets
import selectors
import socket
import threading
import urllib.parse
import weakref
from collections.abc import Callable, Iterator, Mapping
from typing import IO, Any, Final

CHUNK: Final = 256 * 1024
#: a download's read size: the node sends 1 MiB segments
DOWNLOAD_CHUNK: Final = 1 << 20
MAX_JSON_REPLY: Final = 16 << 20
DEFAULT_TIMEOUT: Final = 300.0
#: how often an upload asks the node how much of it is stored
FOLLOW_INTERVAL: Final = 0.25
#: an upload whose bytes did not move in this many asks (one per timeout) is given up
STALL_POLLS: Final = 3
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


def quote_cap(cap: str) -> str:
    return urllib.parse.quote(cap, safe=":")


class _Reply:
    def __init__(self, conn: http.client.HTTPConnection, resp: http.client.HTTPResponse) -> None:
        self.conn = conn
        self.resp = resp

    def close(self) -> None:
        self.resp.close()
        self.conn.close()


ProgressFn = Callable[[int], None]


class HttpApi:
    """Calls to one node's HTTP API (the routes are :class:`NodeClient`'s)."""

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
        self._in_flight_lock = threading.Lock()  # worker threads add, abort() reads

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url})"

    # -- plumbing ------------------------------------------------------------------
    def _headers(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        h = {"Host": f"{self.host}:{self.port}", "User-Agent": "p2pstore-cli"}
        if self._token:
            h["Authorization"] = f"Bearer {self._token}"
        h.update(extra or {})
        return h

    def _connect(self) -> http.client.HTTPConnection:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        with self._in_flight_lock:
            self._in_flight.add(conn)
        return conn

    def abort(self) -> None:
        """Cut every connection in flight (safe from another thread): a call blocked on
        it raises at once, and the node sees the client go, so an upload it has not
        finished is cancelled and nothing is linked (docs/http-api.md, "Cancel")."""
        with self._in_flight_lock:
            conns = list(self._in_flight)
        for conn in conns:  # a cut connection wakes its caller's wait at once
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
        tag: str | None = None,
    ) -> _Reply:
        """One request; with ``tag`` (the call's ``?transfer=``) the reply may take as
        long as the node still works on that transfer (:meth:`_await_answer`)."""
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
            if tag is not None:
                self._await_answer(conn, tag)
            return _Reply(conn, conn.getresponse())
        except (OSError, http.client.HTTPException) as e:
            conn.close()
            raise TransferError(f"no answer from the node's API at {self.url}: {e}") from None

    def _await_answer(self, conn: http.client.HTTPConnection, tag: str) -> None:
        """Wait for the reply to a call the node may work on for long after the request
        (an upload placed over a slow uplink, a verify): asked once per ``timeout`` of
        silence, the node must say the tagged transfer is still running, and an
        upload that is placing must place more within :data:`STALL_POLLS` asks. Else,
        or when the
        node does not answer or know the transfer twice running (it may not have
        registered it yet, or have just ended it), the call is given up on
        (``TransferError``), as a silent one is after ``timeout`` on other calls."""
        sock = conn.sock
        if sock is None:
            return
        strikes = 0
        progress: tuple[object, object] | None = None
        still = 0  # asks in a row with an upload's bytes where they were
        with selectors.DefaultSelector() as sel:
            sel.register(sock, selectors.EVENT_READ)
            while not sel.select(self.timeout):
                doc = self._transfer_doc(tag) or {}
                state = doc.get("status")
                if state == "running":
                    strikes = 0
                    moved = (doc.get("done"), doc.get("stored"))
                    # placing reports each segment; a convergent key's pass over a
                    # local file reports nothing, and may take long on a large one
                    placing = doc.get("kind") == "upload" and bool(doc.get("stored"))
                    stuck = placing and moved == progress
                    still, progress = (still + 1 if stuck else 0), moved
                    if still < STALL_POLLS:
                        continue
                    why = f"the upload made no progress for {STALL_POLLS * self.timeout:g} s"
                else:
                    strikes += 1
                    if strikes < 2:
                        continue
                    why = f"no answer from the node's API at {self.url} for {self.timeout:g} s"
                    if state is not None:
                        why += f" after the transfer ended ({state})"
                conn.close()
                raise TransferError(why)

    def _transfer_doc(self, tag: str) -> dict[str, Any] | None:
        """The tagged transfer's record on the node (``status`` "running", "done",
        ...), or None if the node does not answer or does not know it."""
        try:
            doc = self._json_call("GET", f"{API}/transfer/{tag}")
        except (ClientError, OSError):
            return None
        return doc if isinstance(doc, dict) else None

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
        tag: str | None = None,
    ) -> Any:
        """One call with a JSON reply; ``tag``: the call's ``?transfer=`` (its reply is
        awaited as long as the node works on it, :meth:`_await_answer`)."""
        body = None
        headers = {}
        if payload is not None:
            body = json.dumps(payload).encode()
            headers["Content-Type"] = "application/json"
        reply = self._send(method, path, body=body, headers=headers, tag=tag)
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
        reason = (self._transfer_doc(tag) or {}).get("reason")
        return reason if isinstance(reason, str) and reason else None

    @contextlib.contextmanager
    def _follow(self, params: dict[str, str], stored: ProgressFn | None) -> Iterator[None]:
        """Tag the upload with a fresh ``transfer`` token added to ``params`` and, while
        the block runs, poll the node for its stored bytes and report them."""
        tag = secrets.token_hex(8)
        params["transfer"] = tag
        if stored is None:
            yield
            return
        stop = threading.Event()

        def poll() -> None:
            while not stop.wait(FOLLOW_INTERVAL):
                # None: not registered yet, or finished and gone: try again
                done = (self._transfer_doc(tag) or {}).get("stored")
                if isinstance(done, int):
                    stored(done)

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
