"""timm feature-extractor backbones with config-driven block surgery.

``build_backbone({"name": "resnet50", "out_indices": [4], "blocks": [...]})`` wraps
``timm.create_model(name, features_only=True, ...)``, loads weights (timm pretrained or a local
checkpoint), then applies the block rules (see ``models.rules``) with weight preservation.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Mapping
from typing import Any

import timm
import torch
import torch.nn as nn
from pydantic import Field

from convblocks import BlockConfigError

from .config import int_list, require_mapping
from .rules import parse_rules
from .sections import Section, validate_section
from .stages import StageTraceError, trace_stages
from .surgery import SurgeryReport, apply_block_rules


class BackboneSection(Section):
    """``model.backbone``: keys and defaults (values are checked by ``build_backbone``)."""

    name: Any
    out_indices: Any = None  # None: the caller's default (every stage for pose)
    pretrained: Any = False
    checkpoint: Any = None
    blocks: Any = None
    kwargs: Any = Field(default_factory=dict)


BACKBONE_KEYS = tuple(BackboneSection.model_fields)


class TimmBackbone(nn.Module):
    """A timm feature extractor after surgery: ``(N, 3, H, W) → [(N, C_i, H / r_i, W / r_i)]`` per out index.

    ``out_channels``/``reductions`` list ``C_i``/``r_i``; ``stage_of`` maps module paths of ``body`` to stage
    indices; ``surgery`` is the report of the block rules; ``config`` the validated config it was built from.
    """

    def __init__(
        self, body: nn.Module, stage_of: dict[str, int] | None, surgery: SurgeryReport, config: dict[str, Any]
    ) -> None:
        super().__init__()
        self.body = body
        self.stage_of = stage_of
        self.surgery = surgery
        self.config = config
        info = body.feature_info
        self.out_indices: list[int] = list(info.out_indices)
        self.out_channels: list[int] = list(info.channels())
        self.reductions: list[int] = list(info.reduction())

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``(N, 3, H, W)`` → one feature map per ``out_indices`` entry."""
        feats = self.body(x)
        return list(feats.values()) if isinstance(feats, Mapping) else list(feats)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


def _check_name(name: Any, where: str) -> str:
    if not isinstance(name, str) or not name:
        raise BlockConfigError(f"{where}.name: expected a timm model name such as resnet50, got {name!r}")
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=3, cutoff=0.7)
        hint = f"did you mean {' or '.join(repr(c) for c in close)}?" if close else "see timm.list_models()"
        raise BlockConfigError(f"{where}.name: unknown timm model '{name}'; {hint}")
    return name


def load_checkpoint(path: Any, where: str) -> dict[str, torch.Tensor]:
    """A state dict from ``path`` (``weights_only=True``); unwraps ``state_dict``/``model`` and ``module.``."""
    if not isinstance(path, (str, os.PathLike)) or not os.path.isfile(path):
        raise BlockConfigError(f"{where}: no such file {str(path)!r}; give the path of a saved state dict")
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle, zip or weights-only errors all mean the same to the user
        raise BlockConfigError(
            f"{where}: cannot load {str(path)!r} with weights_only=True ({_first_line(exc)}); save a plain "
            "state dict with torch.save(model.state_dict(), path)"
        ) from exc
    for key in ("state_dict", "model"):
        if isinstance(sd, Mapping) and isinstance(sd.get(key), Mapping):
            sd = sd[key]
    if not isinstance(sd, Mapping) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise BlockConfigError(f"{where}: {str(path)!r} does not hold a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in sd.items()}


def _create(name: str, where: str, **kwargs: Any) -> nn.Module:
    try:
        return timm.create_model(name, features_only=True, **kwargs)
    except BlockConfigError:
        raise
    except Exception as exc:
        what = "pretrained weights could not be loaded" if kwargs.get("pretrained") else "timm could not build it"
        raise BlockConfigError(
            f"{where}: '{name}' with features_only=True failed, {what} ({_first_line(exc)}); check name, kwargs "
            "and weights (pretrained: false works offline)"
        ) from exc


def build_backbone(
    cfg: Mapping[str, Any], where: str = "backbone", default_out_indices: Callable[[int], list[int]] | None = None
) -> TimmBackbone:
    """Build a timm feature extractor from ``cfg`` and apply its block rules.

    Keys: ``name`` (timm model), ``out_indices`` (default: all stages), ``pretrained`` (default false),
    ``checkpoint`` (local state dict of the timm model, or of a convzoo backbone: keys ``body.*``),
    ``blocks`` (rules, see ``models.rules``), ``kwargs`` (extra ``timm.create_model`` arguments).
    ``default_out_indices(n_stages)`` chooses the out indices when the config does not.
    """
    cfg = validate_section(BackboneSection, cfg, where, BlockConfigError)
    name = _check_name(cfg["name"], where)
    pretrained = cfg["pretrained"]
    if not isinstance(pretrained, bool):
        raise BlockConfigError(f"{where}.pretrained: expected true or false, got {pretrained!r}")
    kwargs = dict(require_mapping(cfg["kwargs"], f"{where}.kwargs"))
    for key in ("features_only", "out_indices", "pretrained", "pretrained_cfg_overlay"):
        if key in kwargs:
            raise BlockConfigError(f"{where}.kwargs.{key}: set by convzoo; use {where}.{key} or remove it")
    rules = parse_rules(cfg.get("blocks"), f"{where}.blocks")

    with torch.device("meta"):  # all stages, no memory and no compute: for validation and stage tracing
        probe = _create(name, where, pretrained=False, **kwargs)
    n_stages = len(probe.feature_info)
    default = list(range(n_stages)) if default_out_indices is None else default_out_indices(n_stages)
    out_indices = int_list(default if cfg["out_indices"] is None else cfg["out_indices"], f"{where}.out_indices", 0)
    if max(out_indices) >= n_stages or sorted(set(out_indices)) != out_indices:
        raise BlockConfigError(
            f"{where}.out_indices: {out_indices} must be increasing stage indices of '{name}', which has "
            f"{n_stages} stages (0..{n_stages - 1}, reductions {probe.feature_info.reduction()})"
        )
    try:
        stage_of: dict[str, int] | None = trace_stages(
            probe, tuple(probe.pretrained_cfg.get("input_size", (3, 224, 224)))
        )
    except (StageTraceError, RuntimeError, NotImplementedError):
        stage_of = None  # stages selectors then fail with a clear message; name selectors still work

    state = None
    if cfg.get("checkpoint") is not None:
        state = load_checkpoint(cfg["checkpoint"], f"{where}.checkpoint")
        if not all(k.startswith("body.") for k in state):  # a timm-model state dict: load before surgery
            overlay = {"state_dict": state, "source": "", "file": None, "url": None, "hf_hub_id": None}
            body = _create(
                name,
                f"{where}.checkpoint",
                out_indices=tuple(out_indices),
                pretrained=True,
                pretrained_cfg_overlay=overlay,
                **kwargs,
            )
            state = None
    if state is not None or cfg.get("checkpoint") is None:
        body = _create(name, where, out_indices=tuple(out_indices), pretrained=pretrained, **kwargs)
    config = {**cfg, "name": name, "out_indices": out_indices, "pretrained": pretrained}
    report = apply_block_rules(body, rules, stage_of, where)
    backbone = TimmBackbone(body, stage_of, report, config)
    if state is not None:  # a convzoo backbone state dict: it already has the blocks' weights
        result = backbone.load_state_dict(state, strict=False)
        if result.missing_keys or result.unexpected_keys:
            raise BlockConfigError(
                f"{where}.checkpoint: does not fit this backbone ({len(result.missing_keys)} missing keys, e.g. "
                f"{result.missing_keys[:3]}; {len(result.unexpected_keys)} unexpected, e.g. "
                f"{result.unexpected_keys[:3]}); build it with the same name and blocks as when it was saved"
            )
    return backbone
