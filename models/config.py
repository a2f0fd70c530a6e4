"""Config value helpers: one-line errors that name the key path and the fix (keys: ``models.sections``).

Configs are plain dicts (from YAML). Every problem is a ``BlockConfigError`` (a ``ValueError``) whose
message starts with the key path, e.g. ``model.backbone.blocks[0]: unknown selector 'stage'; did you mean
'stages'?``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from convblocks import BlockConfigError

__all__ = ["BlockConfigError", "require_mapping", "strip_blocks", "int_list"]


def require_mapping(value: Any, where: str) -> Mapping[str, Any]:
    """``value`` if it is a mapping, else a one-line error at ``where``."""
    if not isinstance(value, Mapping):
        raise BlockConfigError(f"{where}: expected a mapping (key: value), got {type(value).__name__}")
    return value


def int_list(value: Any, where: str, minimum: int | None = None) -> list[int]:
    """An int or a list of ints as a list, else a one-line error."""
    items = value if isinstance(value, (list, tuple)) else [value]
    if not items or not all(isinstance(v, int) and not isinstance(v, bool) for v in items):
        raise BlockConfigError(f"{where}: expected an int or a non-empty list of ints, got {value!r}")
    if minimum is not None and min(items) < minimum:
        raise BlockConfigError(f"{where}: values must be >= {minimum}, got {value!r}")
    return [int(v) for v in items]


def strip_blocks(cfg: Any) -> Any:
    """A deep copy of ``cfg`` without block rules, pretrained weights or checkpoints: the plain baseline."""
    if isinstance(cfg, Mapping):
        out = {}
        for key, value in cfg.items():
            if key == "blocks":
                continue
            if key == "pretrained":
                value = False
            if key == "checkpoint":
                continue
            out[key] = strip_blocks(value)
        return out
    if isinstance(cfg, list):
        return [strip_blocks(v) for v in cfg]
    return copy.deepcopy(cfg)
