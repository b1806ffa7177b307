"""Package namespaces that load on first use (PEP 562).

A package ``__init__`` that imports all its modules makes every importer pay for
all of them: the CLI, which needs a cap parser, would import the erasure coder and
the storage server. Such a package lists its public names under ``TYPE_CHECKING``
(for type checkers and readers) and sets ``__getattr__ = lazy_names(...)``."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_names(
    package: str, module_of: Mapping[str, str], namespace: dict[str, Any]
) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package``: a name of ``module_of`` is imported
    from its module, any other name as a submodule; each is kept in ``namespace``
    (the package's globals) once loaded. A missing one is an AttributeError."""

    def __getattr__(name: str) -> Any:
        module = module_of.get(name)
        target = f"{package}.{module or name}"
        try:
            loaded = importlib.import_module(target)
        except ModuleNotFoundError as e:
            if e.name != target:
                raise  # something the module itself imports is missing
            raise AttributeError(f"module {package!r} has no attribute {name!r}") from None
        value = loaded if module is None else getattr(loaded, name)
        namespace[name] = value
        return value

    return __getattr__
