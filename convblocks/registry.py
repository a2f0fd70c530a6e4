"""Name → factory registries: the one mechanism by which configs find blocks (and, later, models).

A config names a block by its registered name (``"dcnv2"``), by an import path (``"pkg.mod:MyConv"``), or
through a third-party package's ``convblocks`` entry point. All errors are ``BlockConfigError`` with a
single-line message that names the problem and the fix.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import metadata
from typing import Any

import torch.nn as nn


class BlockConfigError(ValueError):
    """A block (or model) config cannot be turned into a module; the message says why and what to do."""


@dataclass(frozen=True)
class Entry:
    """One registered factory: a class or a function returning an ``nn.Module``."""

    name: str
    factory: Callable[..., nn.Module]
    description: str
    kind: str  # "conv": drop-in for nn.Conv2d; "head": in/out channels, keeps the spatial size


def _first_line(obj: Any) -> str:
    doc = inspect.getdoc(obj) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


class Registry:
    """A named table of factories with lazy third-party discovery (entry points and ``module:attr``)."""

    def __init__(self, what: str, entry_point_group: str | None = None) -> None:
        self.what = what
        self.entry_point_group = entry_point_group
        self._entries: dict[str, Entry] = {}
        self._entry_points_loaded = False

    def register(
        self, name: str, *, force: bool = False, description: str | None = None, kind: str = "conv"
    ) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
        """Decorator: ``@registry.register("name")`` on a class or factory function."""
        if not isinstance(name, str) or not name or ":" in name:
            raise BlockConfigError(f"invalid {self.what} name {name!r}: use a non-empty string without ':'")

        def decorator(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
            existing = self._entries.get(name)
            if existing is not None and existing.factory is not factory and not force:
                raise BlockConfigError(
                    f"{self.what} name '{name}' is already registered to {existing.factory.__qualname__}; "
                    "pick another name or pass force=True to replace it"
                )
            desc = description if description is not None else _first_line(factory)
            self._entries[name] = Entry(name, factory, desc, kind)
            return factory

        return decorator

    def _load_entry_points(self) -> None:
        """Import third-party factories advertised under the entry-point group (once, on demand)."""
        if self._entry_points_loaded or self.entry_point_group is None:
            return
        self._entry_points_loaded = True
        for ep in metadata.entry_points(group=self.entry_point_group):
            if ep.name in self._entries:
                continue
            try:
                obj = ep.load()
            except Exception as exc:  # a broken plug-in must not break the built-in blocks
                raise BlockConfigError(
                    f"entry point '{ep.name} = {ep.value}' in group '{self.entry_point_group}' failed to "
                    f"load ({type(exc).__name__}: {exc}); fix or uninstall the package that provides it"
                ) from exc
            if ep.name not in self._entries:  # the import may already have registered it
                self.register(ep.name)(obj)

    def _import_path(self, path: str) -> Entry:
        module_name, _, attr = path.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise BlockConfigError(
                f"cannot import module '{module_name}' for {self.what} '{path}' ({exc}); "
                "check the module path and that its package is installed"
            ) from exc
        obj: Any = module
        for part in attr.split("."):
            if not hasattr(obj, part):
                raise BlockConfigError(
                    f"module '{module_name}' has no attribute '{attr}' for {self.what} '{path}'; "
                    "write the path as 'package.module:ClassName'"
                )
            obj = getattr(obj, part)
        if not (inspect.isclass(obj) and issubclass(obj, nn.Module)):  # never call an arbitrary function
            raise BlockConfigError(f"{self.what} '{path}' is not an nn.Module class; name one, e.g. 'pkg.mod:MyConv'")
        return Entry(path, obj, _first_line(obj), "conv")

    def get(self, name: str) -> Entry:
        """The entry for ``name``; an unknown name raises with close matches."""
        if not isinstance(name, str):
            raise BlockConfigError(f"{self.what} type must be a string, got {type(name).__name__}")
        if ":" in name:
            return self._import_path(name)
        if name not in self._entries:
            self._load_entry_points()
        if name not in self._entries:
            close = difflib.get_close_matches(name, list(self._entries), n=3, cutoff=0.75)
            hint = (
                f"did you mean {' or '.join(repr(c) for c in close)}?"
                if close
                else (f"known: {', '.join(sorted(self._entries))}")
            )
            raise BlockConfigError(f"unknown {self.what} '{name}'; {hint}")
        return self._entries[name]

    def names(self) -> list[str]:
        self._load_entry_points()
        return sorted(self._entries)

    def describe(self) -> dict[str, str]:
        """Registered names with their one-line descriptions, sorted by name."""
        return {name: self._entries[name].description for name in self.names()}

    def __contains__(self, name: str) -> bool:
        self._load_entry_points()
        return name in self._entries

    def build(self, cfg: str | Mapping[str, Any], **kwargs: Any) -> nn.Module:
        """Build from ``{"type": name, **options}`` or a name plus keyword options (kwargs win)."""
        if isinstance(cfg, str):
            name, options = cfg, dict(kwargs)
        elif isinstance(cfg, Mapping):
            if "type" not in cfg:
                raise BlockConfigError(f"{self.what} config {dict(cfg)} has no 'type' key; add e.g. type: conv")
            options = {k: v for k, v in cfg.items() if k != "type"}
            options.update(kwargs)
            name = cfg["type"]
        else:
            raise BlockConfigError(
                f"{self.what} config must be a name or a mapping with 'type', got {type(cfg).__name__}"
            )
        entry = self.get(name)
        check_arguments(entry, options, self.what)
        try:
            return entry.factory(**options)
        except BlockConfigError:
            raise
        except (ValueError, TypeError) as exc:
            raise BlockConfigError(f"{self.what} '{entry.name}': {exc}") from exc


# Block arguments that chose an implementation; ``convblocks.kernels.backend`` chooses it now, per process.
BACKEND_ARGUMENTS = ("impl", "layout")


def check_arguments(entry: Entry, options: Mapping[str, Any], what: str = "block") -> None:
    """Raise a one-line error naming the block and argument when ``options`` do not fit its signature."""
    try:
        sig = inspect.signature(entry.factory)
    except (TypeError, ValueError):  # builtins without a signature: let the call decide
        return
    params = sig.parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        accepted = None
    else:
        accepted = [n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    if accepted is not None:
        for key in options:
            if key not in accepted and key in BACKEND_ARGUMENTS:
                raise BlockConfigError(
                    f"{what} '{entry.name}' takes no '{key}': the implementation is chosen per process with "
                    "convblocks.kernels.set_backend(op, name) or CONVZOO_BACKEND=op=name; remove it"
                )
            if key not in accepted:
                close = difflib.get_close_matches(key, accepted, n=1, cutoff=0.6)
                hint = f"did you mean '{close[0]}'?" if close else f"accepted: {', '.join(accepted)}"
                raise BlockConfigError(f"{what} '{entry.name}' got an unknown argument '{key}'; {hint}")
    missing = [
        n
        for n, p in params.items()
        if p.default is p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and n not in options
    ]
    if missing:
        raise BlockConfigError(
            f"{what} '{entry.name}' is missing required argument(s) {', '.join(missing)}; add them to its config"
        )


BLOCKS = Registry("block", entry_point_group="convblocks")


def register_block(
    name: str, *, force: bool = False, description: str | None = None, kind: str = "conv"
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register a block class or factory under ``name`` (``kind="conv"`` for nn.Conv2d drop-ins)."""
    return BLOCKS.register(name, force=force, description=description, kind=kind)


def build_block(cfg: str | Mapping[str, Any], **kwargs: Any) -> nn.Module:
    """Build a block from ``{"type": name, **options}`` or ``build_block(name, **options)``."""
    return BLOCKS.build(cfg, **kwargs)


def list_blocks(kind: str | None = None) -> dict[str, str]:
    """Registered block names → one-line descriptions (optionally only one ``kind``)."""
    return {name: desc for name, desc in BLOCKS.describe().items() if kind is None or BLOCKS.get(name).kind == kind}
