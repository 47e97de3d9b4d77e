"""Package attributes imported on first use, so that `ao --help` and the command line's argument checks do
not pay for torch, transformers and datasets (several seconds) before they are needed."""

from __future__ import annotations

import importlib


def lazy_exports(package: str, exports: dict[str, str]):
    """A module `__getattr__` (PEP 562) for `package` that imports `name` from the submodule
    `exports[name]` (relative, e.g. ".oracle") when it is first read."""

    def __getattr__(name: str):
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(exports[name], package), name)
        globals_ = importlib.import_module(package).__dict__
        globals_[name] = value  # later reads skip this function
        return value

    return __getattr__
