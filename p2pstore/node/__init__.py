"""Node operations: node directories, config, bootstrap lists, known peers, the runner
that hosts the node's services, daemon control and the systemd unit.

Public API (see ``docs/node.md`` and ``docs/bootstrap.md``)::

    NodeConfig, load_config                       config (p2pstore.toml)
    Seed, VdriveKey, BootstrapList, parse_bootstrap, merge, merge_text
    KnownPeers, KnownPeer                         state/known_peers.json
    join_candidates, contact_any                  which peers to join through
    NodeDir, create_node_dir, CreateOptions       the node directory
    NodeRunner, NodeService, NodeContext, ServiceStatus, ServiceFactory
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from p2pstore.base.lazy import lazy_names

if TYPE_CHECKING:
    from .bootstrap import (
        BootstrapList,
        MergeResult,
        Seed,
        VdriveKey,
        load_bootstrap_file,
        merge,
        merge_text,
        parse_bootstrap,
    )
    from .config import NodeConfig, load_config
    from .errors import (
        BootstrapError,
        BootstrapErrors,
        ConfigError,
        DaemonError,
        NodeDirError,
        NodeError,
        NodeLocalError,
        NodeRemoteError,
    )
    from .join import JoinReport, contact_any, join_candidates
    from .known_peers import KnownPeer, KnownPeers
    from .nodedir import CreateOptions, NodeDir, create_node_dir
    from .runner import NodeRunner
    from .service import NodeContext, NodeService, ServiceFactory, ServiceStatus

__all__ = [
    "BootstrapError",
    "BootstrapErrors",
    "BootstrapList",
    "ConfigError",
    "CreateOptions",
    "DaemonError",
    "JoinReport",
    "KnownPeer",
    "KnownPeers",
    "MergeResult",
    "NodeConfig",
    "NodeContext",
    "NodeDir",
    "NodeDirError",
    "NodeError",
    "NodeLocalError",
    "NodeRemoteError",
    "NodeRunner",
    "NodeService",
    "Seed",
    "ServiceFactory",
    "ServiceStatus",
    "VdriveKey",
    "contact_any",
    "create_node_dir",
    "join_candidates",
    "load_bootstrap_file",
    "load_config",
    "merge",
    "merge_text",
    "parse_bootstrap",
]

_MODULE_OF = {
    "BootstrapError": "errors",
    "BootstrapErrors": "errors",
    "BootstrapList": "bootstrap",
    "ConfigError": "errors",
    "CreateOptions": "nodedir",
    "DaemonError": "errors",
    "JoinReport": "join",
    "KnownPeer": "known_peers",
    "KnownPeers": "known_peers",
    "MergeResult": "bootstrap",
    "NodeConfig": "config",
    "NodeContext": "service",
    "NodeDir": "nodedir",
    "NodeDirError": "errors",
    "NodeError": "errors",
    "NodeLocalError": "errors",
    "NodeRemoteError": "errors",
    "NodeRunner": "runner",
    "NodeService": "service",
    "Seed": "bootstrap",
    "ServiceFactory": "service",
    "ServiceStatus": "service",
    "VdriveKey": "bootstrap",
    "contact_any": "join",
    "create_node_dir": "nodedir",
    "join_candidates": "join",
    "load_bootstrap_file": "bootstrap",
    "load_config": "config",
    "merge": "bootstrap",
    "merge_text": "bootstrap",
    "parse_bootstrap": "bootstrap",
}

__getattr__ = lazy_names(__name__, _MODULE_OF, globals())
