"""The ``models`` and ``heads`` registries, and ``build_model``: config → model, the way blocks are built.

Users add model types with ``@register_model("my_model")`` on a factory taking the config's keys as keyword
arguments, and pose heads with ``@register_head("my_head")`` (see ``models.pose``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

import torch.nn as nn

from convblocks import BlockConfigError, Registry

from .config import require_mapping
from .sections import plain, signature_defaults

MODELS = Registry("model")
HEADS = Registry("head")
BUILTIN_MODULES = ("models.pose", "models.pose_heads", "models.detection")  # import-time registration of built-ins


def register_model(name: str, *, force: bool = False) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator: register a model factory ``f(**model_cfg_without_type) -> nn.Module`` under ``name``."""
    return MODELS.register(name, force=force, kind="model")


def register_head(name: str, *, force: bool = False) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator: register a pose head factory (see ``models.pose.build_head`` for its arguments)."""
    return HEADS.register(name, force=force, kind="head")


def build_model(cfg: Mapping[str, Any]) -> nn.Module:
    """Build a registered model from ``{"type": name, **options}`` (or a full config with a ``model:`` key).

    The result carries ``config``: the model section resolved, every default filled in (the factory's signature
    and the parts it records in its own ``config``: backbone, head), so a run directory records the whole model
    and ``models.describe`` can rebuild its baseline.
    """
    cfg = require_mapping(cfg, "model")
    for module in BUILTIN_MODULES:
        importlib.import_module(module)
    if "type" not in cfg and isinstance(cfg.get("model"), Mapping):
        cfg = cfg["model"]
    if "type" not in cfg:
        raise BlockConfigError(
            f"model: missing 'type'; add e.g. type: topdown_pose (known: {', '.join(MODELS.names())})"
        )
    try:
        model = MODELS.build(cfg)
    except BlockConfigError as exc:
        msg = str(exc)
        raise BlockConfigError(msg if msg.startswith("model") else f"model: {msg}") from exc
    defaults = signature_defaults(MODELS.get(cfg["type"]).factory)
    parts = getattr(model, "config", None)
    merged = {**defaults, **cfg, **(parts if isinstance(parts, dict) else {})}
    model.config = plain({"type": cfg["type"], **{k: merged[k] for k in (*cfg, *merged) if k != "type"}})
    return model
