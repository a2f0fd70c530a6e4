"""What surgery did to a model: replaced modules, parameters and FLOPs before/after, per backbone stage.

``describe(model)`` rebuilds the model from its config without block rules (the baseline), runs one
forward of each under ``torch.utils.flop_counter.FlopCounterMode`` and attributes FLOPs and parameters to
parts: ``stage i`` for backbone modules, else the model's top-level part (``neck``, ``head``, ``backbone.fpn``).
FLOPs count convolutions and matrix products (2 per multiply-add); bilinear sampling in deformable convs,
element-wise ops and pooling are not counted.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from .backbone import TimmBackbone, build_backbone
from .config import strip_blocks
from .stages import stage_for
from .surgery import SurgeryReport


def _staged_backbone(model: nn.Module) -> tuple[str, TimmBackbone] | None:
    for path, module in model.named_modules():
        if isinstance(module, TimmBackbone):
            return path, module
    return None


def part_labeller(model: nn.Module):
    """A function ``module path → part label`` (``stage 2``, ``head``, ``backbone.fpn``, ``other``)."""
    found = _staged_backbone(model)
    body_prefix = None if found is None else (f"{found[0]}.body" if found[0] else "body")
    stage_of = None if found is None else found[1].stage_of

    def label(path: str) -> str:
        if not path:
            return "other"
        if body_prefix is not None and (path == body_prefix or path.startswith(body_prefix + ".")):
            rel = path[len(body_prefix) + 1 :]
            stage = stage_for(rel, stage_of) if (rel and stage_of) else None
            return "backbone" if stage is None else f"stage {stage}"
        parts = path.split(".")
        depth = 1
        while body_prefix is not None and body_prefix.startswith(".".join(parts[:depth]) + ".") and depth < len(parts):
            depth += 1
        return ".".join(parts[:depth])

    return label


def params_by_part(model: nn.Module) -> dict[str, int]:
    """Parameter count per part label (shared parameters counted once)."""
    label = part_labeller(model)
    counts: dict[str, int] = defaultdict(int)
    for name, p in model.named_parameters():
        counts[label(name.rsplit(".", 1)[0] if "." in name else "")] += p.numel()
    return dict(counts)


def flops_by_part(model: nn.Module, input_size: tuple[int, int, int]) -> dict[str, int]:
    """FLOPs of one ``(1, *input_size)`` forward in eval mode, per part label."""
    label = part_labeller(model)
    acc: dict[str, int] = defaultdict(int)
    stack = ["other"]
    counter = FlopCounterMode(display=False)
    last = [0]

    def flush() -> None:
        now = counter.get_total_flops()
        acc[stack[-1]] += now - last[0]
        last[0] = now

    def pre(path: str):
        def hook(module, args):
            flush()
            stack.append(label(path))

        return hook

    def post(module, args, output):
        flush()
        stack.pop()

    handles = []
    for path, module in model.named_modules():
        if path:
            handles += [module.register_forward_pre_hook(pre(path)), module.register_forward_hook(post)]
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        with torch.no_grad(), counter:
            model(torch.zeros(1, *input_size, device=device))
            flush()
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return {k: v for k, v in acc.items() if v}


def surgery_reports(model: nn.Module) -> list[SurgeryReport]:
    """Every surgery report attached to ``model`` or its submodules (backbone, heads)."""
    return [m.surgery for m in model.modules() if isinstance(getattr(m, "surgery", None), SurgeryReport)]


def baseline_of(model: nn.Module) -> nn.Module | None:
    """The same model built from its config without block rules; None when it was not built from one."""
    config = getattr(model, "config", None)
    if not isinstance(config, dict):
        return None
    if isinstance(model, TimmBackbone):
        return build_backbone(strip_blocks(config))
    from .registry import build_model  # late: the registry imports the model modules

    return build_model(strip_blocks(config))


def default_input_size(model: nn.Module) -> tuple[int, int, int]:
    """``model.input_size`` (``[H, W]`` or ``[C, H, W]``), else the backbone's timm input size, else 224²."""
    size = getattr(model, "input_size", None)
    if size is not None:
        size = tuple(int(s) for s in size)
        return size if len(size) == 3 else (3, *size)
    found = _staged_backbone(model)
    if found is not None:
        return tuple(found[1].body.pretrained_cfg.get("input_size", (3, 224, 224)))
    return (3, 224, 224)


def describe(model: nn.Module, input_size: tuple[int, ...] | None = None, baseline: bool = True) -> dict[str, Any]:
    """Replaced modules, parameters and FLOPs before/after surgery per part, plus a ``table`` string.

    ``input_size``: ``(H, W)`` or ``(C, H, W)`` of the FLOPs forward (default: the model's input size).
    With ``baseline`` the model is rebuilt without block rules for the "before" columns.
    """
    size = default_input_size(model) if input_size is None else tuple(int(s) for s in input_size)
    size = size if len(size) == 3 else (3, *size)
    reports = surgery_reports(model)
    replaced = [r for rep in reports for r in rep.replacements]
    base = baseline_of(model) if baseline and replaced else None
    after_p, after_f = params_by_part(model), flops_by_part(model, size)
    before_p, before_f = (after_p, after_f) if base is None else (params_by_part(base), flops_by_part(base, size))
    counts: dict[str, int] = defaultdict(int)
    label = part_labeller(model)
    prefix = {id(rep): _report_prefix(model, rep) for rep in reports}
    for rep in reports:
        for r in rep.replacements:
            counts[label(f"{prefix[id(rep)]}{r.path}")] += 1
    parts = sorted(set(after_p) | set(after_f) | set(before_p) | set(before_f), key=_part_order)
    rows = [
        {
            "part": part,
            "replaced": counts.get(part, 0),
            "params_before": before_p.get(part, 0),
            "params_after": after_p.get(part, 0),
            "flops_before": before_f.get(part, 0),
            "flops_after": after_f.get(part, 0),
        }
        for part in parts
    ]
    total = {"part": "total", **{k: sum(r[k] for r in rows) for k in rows[0] if k != "part"}} if rows else {}
    out = {
        "input_size": list(size),
        "rows": rows,
        "total": total,
        "replacements": [{"where": rep.where, **r} for rep in reports for r in rep.to_dict()["replacements"]],
        "not_preserved": [f"{rep.where}.{r.path}: {r.note}" for rep in reports for r in rep.not_preserved],
        "skipped": [f"{rep.where}.{p}: {why}" for rep in reports for p, why in rep.skipped],
    }
    out["table"] = format_table(out)
    return out


def _report_prefix(model: nn.Module, report: SurgeryReport) -> str:
    for path, module in model.named_modules():
        if getattr(module, "surgery", None) is report:
            inner = f"{path}.body." if isinstance(module, TimmBackbone) else f"{path}."
            return inner.lstrip(".") if path else ("body." if isinstance(module, TimmBackbone) else "")
    return ""


def _part_order(part: str) -> tuple[int, Any]:
    if part.startswith("stage "):
        return (0, int(part.split()[1]))
    return (1 if part != "other" else 2, part)


def _m(n: int) -> str:
    return f"{n / 1e6:.3f}M"


def _g(n: int) -> str:
    return f"{n / 1e9:.3f}G"


def format_table(desc: dict[str, Any]) -> str:
    """A fixed-width table of ``describe``'s rows, then the replaced modules and preservation notes."""
    head = ("part", "replaced", "params before", "params after", "FLOPs before", "FLOPs after")
    lines = [f"{head[0]:<16}{head[1]:>9}{head[2]:>15}{head[3]:>15}{head[4]:>14}{head[5]:>14}"]
    for r in [*desc["rows"], desc["total"]] if desc["rows"] else []:
        lines.append(
            f"{r['part']:<16}{r['replaced']:>9}{_m(r['params_before']):>15}{_m(r['params_after']):>15}"
            f"{_g(r['flops_before']):>14}{_g(r['flops_after']):>14}"
        )
    c, h, w = desc["input_size"]
    lines.append(f"FLOPs for one {c}x{h}x{w} input (2 per multiply-add; deformable sampling not counted)")
    for r in desc["replacements"]:
        flag = "preserved" if r["preserved"] else f"NOT preserved: {r['note']}"
        stage = "" if r["stage"] is None else f" [stage {r['stage']}]"
        lines.append(f"  {r['where']}.{r['path']}{stage} {r['old']} -> {r['block']} ({flag})")
    if desc["skipped"]:
        lines.append(f"  {len(desc['skipped'])} conv(s) not replaceable, e.g. {desc['skipped'][0]}")
    return "\n".join(lines)
