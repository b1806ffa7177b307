"""Modules that aioquic's TLS imports only to verify certificate chains, loaded on
first use instead of at start.

The transport pins every peer by its node ID (``verify_mode=CERT_NONE``,
``auth.check_server_key``), so ``aioquic.tls.verify_certificate``, the one user of
pyOpenSSL, service_identity and certifi there, never runs in a node. aioquic imports
them at module level all the same, which costs every node process about 1.2 MB of
memory for nothing (docs/local-grid.md, "Memory"). :func:`defer` puts stand-ins in
their place before aioquic is imported; the first attribute read from a stand-in
imports the real package and answers from it, so code that does use them (aioquic's
verification with a ``server_name``, or any other library) works as before, only
later.

Invariants:
- A package already imported, or not installed, is left alone.
- Once aioquic's TLS module has been imported it is too late: nothing is replaced.
- All stand-ins of one package make way for the real one together.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import sys
import threading
import types
from typing import Any

#: each package with the submodules aioquic.tls imports from it by name
DEFERRED: dict[str, tuple[str, ...]] = {
    "certifi": (),
    "service_identity": (),
    "OpenSSL": ("crypto",),
}


class _Deferred(types.ModuleType):
    """A stand-in: the first attribute it does not have loads the real module."""

    def __getattr__(self, attr: str) -> Any:
        return getattr(_load(self.__name__), attr)


_LOCK = threading.RLock()  # loading one package may load another


def _load(name: str) -> types.ModuleType:
    top = name.partition(".")[0]
    with _LOCK:  # two threads' first uses: one import
        for key in [top, *(f"{top}.{sub}" for sub in DEFERRED.get(top, ()))]:
            if isinstance(sys.modules.get(key), _Deferred):
                sys.modules.pop(key, None)
        return importlib.import_module(name)


def defer() -> None:
    """Put stand-ins for :data:`DEFERRED` in ``sys.modules`` (idempotent)."""
    if "aioquic.tls" in sys.modules:
        return
    for top, subs in DEFERRED.items():
        spec = None if top in sys.modules else importlib.util.find_spec(top)
        if spec is None:
            continue
        package = _Deferred(top)
        # the import system asks a package for its path ("from OpenSSL import crypto"),
        # and find_spec a module in sys.modules for its spec
        package.__path__ = list(spec.submodule_search_locations or ())
        package.__spec__ = spec
        sys.modules[top] = package
        for sub in subs:
            module = _Deferred(f"{top}.{sub}")
            module.__spec__ = importlib.machinery.PathFinder.find_spec(
                module.__name__, package.__path__
            )
            sys.modules[module.__name__] = module
            setattr(package, sub, module)


def is_deferred(name: str) -> bool:
    """Whether ``name`` is still a stand-in (for status and tests)."""
    return isinstance(sys.modules.get(name), _Deferred)
