"""Building a node's :class:`~.drive.Vdrive` from its key, node directory, bootstrap
list and ``[vdrive]`` config, plus :class:`VdriveNodeCaller` (finding the vdrive
node and calling ``vdrive.apply`` on it). This is the hook node assembly uses:

    nv = build_from_context(ctx, dht=dht_node, store=GridObjectStore(up, down, secret),
                            call=VdriveNodeCaller(...))
    nv.register(endpoint)          # serves vdrive.apply if this node is the vdrive node
    backend.vdrive = nv.vdrive     # VdriveOperations

Files (docs/vdrive.md "Node files"): ``private/vdrive-shared.secret`` (the shared
drive's read secret, on the vdrive node only), ``private/vdrive-private.secret``,
``private/vdrive-shared.head.json`` / ``private/vdrive-private.head.json`` (the
writer's head: sequence and root cap), ``state/vdrive_seen.json`` (highest
sequence seen per drive: rollback protection). Secret files are 0600.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from p2pstore.app.drive import VdriveOperations
from p2pstore.base.tasks import TaskOwner
from p2pstore.node.advertise import own_bootstrap_text, own_seed
from p2pstore.node.bootstrap import VdriveKey
from p2pstore.node.invitations import InviteBook, register_invites
from p2pstore.node.secret_files import create_secret_file, read_secret_file
from p2pstore.vdrive.drive import Drive, DriveReader, LocalWriter, Vdrive
from p2pstore.vdrive.errors import VdriveLocalError
from p2pstore.vdrive.objects import CachingStore, GridObjectStore, ObjectStore
from p2pstore.vdrive.root_record import (
    PRIVATE_NAME,
    SECRET_BYTES,
    SHARED_NAME,
    SeenStore,
    new_read_secret,
)
from p2pstore.vdrive.rpc import METHOD, NotDelivered, RemoteWriter, register_vdrive_rpc
from p2pstore.vdrive.writer import DriveWriter, RecordPublisher, WritePolicy
from quic_transport.errors import ConnectError
from quic_transport.identity import IdentityError, NodeId, NodeKey, b32decode, b32encode

SECRET_PREFIX = "p2pstore-vdrive-secret-v1:"
SHARED_SECRET_FILE = "vdrive-shared.secret"
PRIVATE_SECRET_FILE = "vdrive-private.secret"
SHARED_HEAD_FILE = "vdrive-shared.head.json"
PRIVATE_HEAD_FILE = "vdrive-private.head.json"
SEEN_FILE = "vdrive_seen.json"

log = logging.getLogger(__name__)


def load_or_create_secret(path: Path) -> bytes:
    if not path.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        create_secret_file(path, SECRET_PREFIX + b32encode(new_read_secret()) + "\n")
    text = read_secret_file(path, what="vdrive secret").strip()
    if not text.startswith(SECRET_PREFIX):
        raise VdriveLocalError("bad-state", f"{path}: not a vdrive secret file")
    try:
        return b32decode(text[len(SECRET_PREFIX) :], expected_len=SECRET_BYTES, what="secret")
    except IdentityError as e:
        raise VdriveLocalError("bad-state", f"{path}: {e}") from None


class _HasNodeId(Protocol):
    @property
    def node_id(self) -> NodeId: ...


class VdriveNodeCaller:
    """``call(body)`` for :class:`~.rpc.RemoteWriter`: finds the vdrive node (a
    bootstrap seed with its node ID, else a DHT lookup of that ID) and calls it."""

    def __init__(
        self,
        node_id: NodeId,
        *,
        call: Callable[[Any, str, Any], Awaitable[Any]],
        lookup: Callable[[NodeId], Awaitable[Sequence[Any]]],
        seeds: Sequence[Any] = (),
    ) -> None:
        self.node_id = node_id
        self._call = call
        self._lookup = lookup
        self._seed = next((s for s in seeds if s.node_id == node_id), None)
        self._known = self._seed

    async def __call__(self, body: Any, method: str = METHOD) -> Any:
        contact = self._known
        if contact is None:
            found = [c for c in await self._lookup(self.node_id) if c.node_id == self.node_id]
            contact = found[0] if found else self._seed
            if contact is None:
                raise NotDelivered("the vdrive node is not in the DHT (it may be down)")
            self._known = contact
        try:
            return await self._call(contact, method, body)
        except ConnectError as e:
            self._known = None  # look it up again next time (its address may have changed)
            raise NotDelivered(str(e)) from None
        except Exception:
            self._known = None
            raise


@dataclass
class NodeVdrive:
    vdrive: Vdrive
    shared_writer: DriveWriter | None  # set on the vdrive node
    private_writer: DriveWriter
    line: VdriveKey | None  # the p2ps-vdrive line this node publishes (vdrive node only)

    def register(self, registry: Any) -> None:
        """Serve ``vdrive.apply`` on ``registry`` (an Endpoint) if this is the vdrive node."""
        if self.shared_writer is not None:
            register_vdrive_rpc(registry, self.shared_writer)


def build_node_vdrive(
    *,
    key: NodeKey,
    private_dir: Path,
    state_dir: Path,
    trust: VdriveKey | None,
    serve: bool,
    writers: Iterable[str] = (),
    open_mode: bool = False,
    extra_writers: Callable[[], Collection[NodeId]] | None = None,
    dht: RecordPublisher,
    store: ObjectStore,
    call: Callable[..., Awaitable[Any]] | None,
    clock: Callable[[], float] = time.time,
    max_age: float = 1.0,
    cache_bytes: int = 64 * 1024 * 1024,
) -> NodeVdrive:
    cached = (
        store if isinstance(store, CachingStore) else CachingStore(store, max_bytes=cache_bytes)
    )
    seen = SeenStore(state_dir / SEEN_FILE)

    def reader(pk: bytes, name: bytes, secret: bytes, label: str) -> DriveReader:
        return DriveReader(
            source=dht,
            public_key=pk,
            name=name,
            read_secret=secret,
            store=cached,
            seen=seen,
            clock=clock,
            max_age=max_age,
            label=label,
        )

    # private drive: this node's key, a secret that never leaves private/
    psecret = load_or_create_secret(private_dir / PRIVATE_SECRET_FILE)
    pw = DriveWriter(
        signer=key,
        name=PRIVATE_NAME,
        read_secret=psecret,
        store=cached,
        dht=dht,
        policy=WritePolicy.only_owner(key.node_id),
        state_path=private_dir / PRIVATE_HEAD_FILE,
        label="private",
        clock=clock,
    )
    private = Drive(
        "private",
        cached,
        reader(key.public_key, PRIVATE_NAME, psecret, "private"),
        LocalWriter(pw, key.node_id),
        local=pw,
    )

    shared: Drive | None = None
    sw: DriveWriter | None = None
    line: VdriveKey | None = None
    if serve:
        shared, sw, line = _served_shared_drive(
            key, private_dir, trust, writers, open_mode, dht, cached, reader, clock, extra_writers
        )
    elif trust is not None:
        r = None
        if trust.read_secret is not None:
            r = reader(trust.public_key, SHARED_NAME, trust.read_secret, "shared")
        shared = Drive("shared", cached, r, RemoteWriter(call) if call is not None else None)
    return NodeVdrive(Vdrive(shared=shared, private=private, store=cached), sw, pw, line)


def _served_shared_drive(
    key: NodeKey,
    private_dir: Path,
    trust: VdriveKey | None,
    writers: Iterable[str],
    open_mode: bool,
    dht: RecordPublisher,
    cached: CachingStore,
    reader: Callable[[bytes, bytes, bytes, str], DriveReader],
    clock: Callable[[], float],
    extra_writers: Callable[[], Collection[NodeId]] | None = None,
) -> tuple[Drive, DriveWriter, VdriveKey]:
    """The shared drive on the vdrive node itself: its secret, its writer, the
    ``p2ps-vdrive`` line others need."""
    if trust is not None and trust.public_key != key.public_key:
        raise VdriveLocalError(
            "bad-config",
            "[vdrive] serve = true, but the bootstrap list's p2ps-vdrive key is another "
            "node's; set serve = false or fix the list",
        )
    ssecret = load_or_create_secret(private_dir / SHARED_SECRET_FILE)
    if trust is not None and trust.read_secret not in (None, ssecret):
        raise VdriveLocalError(
            "bad-config", "the bootstrap list's vdrive read secret is not this node's"
        )
    policy = WritePolicy.from_list(
        key.node_id, [NodeId.from_b32(w) for w in writers], open=open_mode, extra=extra_writers
    )
    sw = DriveWriter(
        signer=key,
        name=SHARED_NAME,
        read_secret=ssecret,
        store=cached,
        dht=dht,
        policy=policy,
        state_path=private_dir / SHARED_HEAD_FILE,
        label="shared",
        clock=clock,
    )
    shared = Drive(
        "shared",
        cached,
        reader(key.public_key, SHARED_NAME, ssecret, "shared"),
        LocalWriter(sw, key.node_id),
        local=sw,
    )
    line = VdriveKey(key.public_key, "vdrive", ssecret)
    return shared, sw, line


def build_from_context(
    ctx: Any,
    *,
    dht: RecordPublisher,
    store: ObjectStore,
    call: Callable[..., Awaitable[Any]] | None,
) -> NodeVdrive:
    """The same, from a runner ``NodeContext`` (``p2pstore.node.service``)."""
    cfg = ctx.config.vdrive
    serve = cfg.serve if cfg.serve is not None else ctx.config.node.introducer
    return build_node_vdrive(
        key=ctx.key,
        private_dir=ctx.node_dir.private_dir,
        state_dir=ctx.node_dir.state_dir,
        trust=ctx.bootstrap.vdrive,
        serve=serve,
        writers=cfg.writers,
        open_mode=cfg.open,
        extra_writers=InviteBook(ctx.node_dir.private_dir).writers,
        dht=dht,
        store=store,
        call=call,
        clock=ctx.clock,
    )


class NodeVdriveBackend(VdriveOperations):
    """The component node assembly plugs into ``GridApplication.vdrive`` (the vdrive half
    of the API backend), with the :class:`NodeVdrive` it serves.

    :meth:`start` runs one background task (ended by :meth:`close`): load the heads
    of the drives this node writes and publish them again (so the DHT node keeps
    republishing them), retrying every ``retry`` seconds while that fails (e.g.
    before the node has joined)."""

    def __init__(self, node: NodeVdrive, *, retry: float = 30.0) -> None:
        self.node = node
        self.vdrive = node.vdrive
        self.retry = retry
        self._tasks = TaskOwner()

    def start(self) -> None:
        if not self._tasks:
            self._tasks.start(self._publish_heads(), name="vdrive-publish-heads")

    async def _publish_heads(self) -> None:
        writers = [w for w in (self.node.shared_writer, self.node.private_writer) if w]
        while True:
            done = True
            for w in writers:
                try:
                    await w.load()
                    published = await w.publish_pending()
                    done = published and await w.confirm_published() and done
                except Exception as e:  # keep trying; reads and writes work meanwhile
                    log.warning("vdrive: publishing the %s drive's head failed: %s", w.label, e)
                    done = False
            if done:
                return
            await asyncio.sleep(self.retry)

    async def close(self) -> None:
        await self._tasks.close()


def grid_vdrive_factory(service: Any) -> NodeVdriveBackend:
    """``GridService``'s ``vdrive_factory`` hook (p2pstore/node/grid_service.py):

    uses ``service.context`` (NodeContext), ``service.endpoint`` (QUIC Endpoint),
    ``service.dht`` (DhtNode) and ``service.backend`` (its direct Uploader, never
    through a helper, and its Downloader store the directory objects, convergent
    under the node's convergence secret); registers ``vdrive.apply`` on the endpoint
    when this node serves the shared drive.
    """
    from dht.contact import Contact
    from quic_transport import PeerAddress

    ctx, endpoint, dht, files = service.context, service.endpoint, service.dht, service.backend
    store = GridObjectStore(files.direct_uploader, files.downloader, ctx.convergence_secret)

    async def call(contact: Any, method: str, body: Any) -> Any:
        peer = PeerAddress(contact.node_id, contact.host, contact.port)
        return await endpoint.call(peer, method, body, timeout=30.0)

    caller = None
    trust = ctx.bootstrap.vdrive
    if trust is not None:
        caller = VdriveNodeCaller(
            NodeId.from_public_key(trust.public_key),
            call=call,
            lookup=dht.lookup,
            seeds=[Contact(s.node_id, s.host, s.port) for s in ctx.bootstrap.seeds],
        )
    node = build_from_context(ctx, dht=dht, store=store, call=caller)
    node.vdrive.live = getattr(files, "mutable", None)  # live directories (docs/mutable.md)
    node.register(endpoint)

    def bootstrap_text() -> str:  # what a redeemed invitation hands over
        seed = own_seed(ctx.config, ctx.key, service.status()["listen_port"])
        return own_bootstrap_text(seed, ctx.bootstrap, ctx.config, ctx.key)

    register_invites(endpoint, ctx.node_dir.private_dir, bootstrap_text)
    comp = NodeVdriveBackend(node)
    with contextlib.suppress(RuntimeError):  # no running loop: the first change publishes
        comp.start()
    return comp
