"""Block surgery: replace a module's plain ``nn.Conv2d`` layers by registry blocks, rule by rule.

Each replaced conv passes its geometry (channels, kernel, stride, padding, dilation, groups, bias) to the
block; with ``preserve`` on (the default) the block is initialised from the conv via ``load_from_conv`` so
the network computes the same function right after surgery wherever the block family allows it. The
returned ``SurgeryReport`` says, per replaced module, whether that holds.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch.nn as nn

from convblocks import BlockConfigError, build_block

from .rules import BlockRule, Candidate, parse_rules


@dataclass
class Replacement:
    """One conv replaced by a block: where, by which rule, and whether its function was preserved."""

    path: str
    stage: int | None
    rule: str
    old: str
    block: str
    preserved: bool
    note: str
    params_before: int
    params_after: int


@dataclass
class SurgeryReport:
    """What a set of rules did to a module (``where``: its config path, e.g. ``backbone``)."""

    where: str
    replacements: list[Replacement] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)

    @property
    def not_preserved(self) -> list[Replacement]:
        return [r for r in self.replacements if not r.preserved]

    def to_dict(self) -> dict[str, Any]:
        return {
            "where": self.where,
            "replacements": [asdict(r) for r in self.replacements],
            "skipped": [{"path": p, "reason": why} for p, why in self.skipped],
        }

    def lines(self) -> list[str]:
        """Human-readable lines: one per replacement, then what was skipped and why."""
        out = []
        for r in self.replacements:
            stage = "-" if r.stage is None else str(r.stage)
            flag = "preserved" if r.preserved else f"NOT preserved ({r.note})"
            out.append(f"{self.where}.{r.path} [stage {stage}]: {r.old} -> {r.block}, {flag}")
        for path, why in self.skipped:
            out.append(f"{self.where}.{path}: skipped, {why}")
        return out


def conv_summary(conv: nn.Conv2d) -> str:
    """``Conv2d(64->64, 3x3/1, g1)``: the geometry a block inherits."""
    (kh, kw), (sh, _) = conv.kernel_size, conv.stride
    return f"Conv2d({conv.in_channels}->{conv.out_channels}, {kh}x{kw}/{sh}, g{conv.groups})"


def _padding(conv: nn.Conv2d) -> tuple[int, int] | None:
    """Numeric padding of ``conv``; ``'same'`` becomes the symmetric same padding, ``'valid'`` zero."""
    if conv.padding == "valid":
        return (0, 0)
    if conv.padding == "same":
        kh, kw = conv.kernel_size
        dh, dw = conv.dilation
        if (dh * (kh - 1)) % 2 or (dw * (kw - 1)) % 2:
            return None
        return (dh * (kh - 1) // 2, dw * (kw - 1) // 2)
    return tuple(conv.padding)


def conv_candidates(
    root: nn.Module, stage_of: Mapping[str, int] | None = None
) -> tuple[list[Candidate], list[tuple[str, str]]]:
    """Plain ``nn.Conv2d`` modules of ``root`` in module order, and the convs that cannot be replaced.

    Subclasses of ``nn.Conv2d`` (timm ``Conv2dSame``, ``StdConv2d``, ...) have their own forward, so a drop-in
    block would change what they compute: they are listed as skipped, with the reason.
    """
    candidates, skipped = [], []
    for path, module in root.named_modules():
        if not isinstance(module, nn.Conv2d):
            continue
        if type(module) is not nn.Conv2d:
            skipped.append((path, f"{type(module).__name__} subclasses nn.Conv2d with its own forward"))
        elif module.padding_mode != "zeros":
            skipped.append((path, f"padding_mode={module.padding_mode!r} (blocks pad with zeros)"))
        elif _padding(module) is None:
            skipped.append((path, "asymmetric 'same' padding (even kernel)"))
        else:
            stage = None if stage_of is None else stage_of.get(path)
            candidates.append(Candidate(path, module, stage))
    return candidates, skipped


def block_for_conv(conv: nn.Conv2d, spec: Mapping[str, Any], preserve: bool = True) -> tuple[nn.Module, bool, str]:
    """Build the block ``spec`` with ``conv``'s geometry; with ``preserve``, initialise it from ``conv``.

    Returns ``(block, preserved, note)``: ``preserved`` is True when the block now computes exactly what
    ``conv`` computed. dcnv2 gets ``mask_act='2sigmoid'`` (mask 1 at init) unless ``spec`` sets it.
    """
    spec = dict(spec)
    if preserve and spec["type"] == "dcnv2":
        spec.setdefault("mask_act", "2sigmoid")
    block = build_block(
        spec,
        in_channels=conv.in_channels,
        out_channels=conv.out_channels,
        kernel_size=tuple(conv.kernel_size),
        stride=tuple(conv.stride),
        padding=_padding(conv),
        dilation=tuple(conv.dilation),
        groups=conv.groups,
        bias=conv.bias is not None,
    )
    block.to(device=conv.weight.device, dtype=conv.weight.dtype)
    block.train(conv.training)
    if not preserve:
        return block, False, "preserve: false, the block's own init"
    loader = getattr(block, "load_from_conv", None)
    if loader is None:
        return block, False, f"{spec['type']} has no load_from_conv, freshly initialised"
    if loader(conv):
        return block, True, "initialised from the conv, same function"
    if spec["type"] == "dcnv2":
        return block, False, f"dcnv2 with mask_act={spec['mask_act']!r} halves the output at init; use 2sigmoid"
    return block, False, f"{spec['type']} cannot compute the conv's function with these options"


def _no_match_message(
    rule: BlockRule, remaining: Sequence[Candidate], replaced: int, skipped: Sequence[tuple[str, str]]
) -> str:
    stages = sorted({c.stage for c in remaining if c.stage is not None})
    kernels = sorted({tuple(c.conv.kernel_size) for c in remaining})
    strides = sorted({tuple(c.conv.stride) for c in remaining})
    examples = ", ".join(
        f"{c.path} (stage {c.stage}, {c.conv.kernel_size[0]}x{c.conv.kernel_size[1]}/{c.conv.stride[0]})"
        for c in remaining[:6]
    )
    msg = (
        f"{rule.where}: rule {rule.describe()} matches no convolution; candidates: {len(remaining)} plain "
        f"Conv2d with stages {stages}, kernel sizes {[f'{h}x{w}' for h, w in kernels]}, strides "
        f"{[s[0] if s[0] == s[1] else list(s) for s in strides]}, e.g. {examples or 'none'}"
    )
    if replaced:
        msg += f"; {replaced} already replaced by earlier rules"
    if rule.name is not None:
        hits = [p for p, _ in skipped if any(fnmatch.fnmatchcase(p, pat) for pat in rule.name)]
        if hits:
            msg += f"; skipped (not plain nn.Conv2d): {', '.join(hits[:4])}"
    return msg + "; fix the selectors"


def apply_block_rules(
    root: nn.Module,
    rules: Sequence[BlockRule] | Sequence[Mapping[str, Any]] | None,
    stage_of: Mapping[str, int] | None = None,
    where: str = "backbone",
) -> SurgeryReport:
    """Apply ``rules`` in order to ``root`` in place; each conv is replaced at most once.

    ``stage_of`` maps module paths to stage indices (None: ``root`` has no stages and a ``stages``
    selector is an error). A rule that matches nothing raises ``BlockConfigError`` naming the rule and
    the candidates left.
    """
    rules = list(rules or [])
    parsed = rules if all(isinstance(r, BlockRule) for r in rules) else parse_rules(rules, f"{where}.blocks")
    candidates, skipped = conv_candidates(root, stage_of)
    report = SurgeryReport(where, skipped=skipped)
    remaining = list(candidates)
    for rule in parsed:
        if rule.stages is not None and stage_of is None:
            raise BlockConfigError(
                f"{rule.where}.stages: {where} has no stages; select its convs with name or kernel_size"
            )
        chosen = rule.select(remaining)
        if not chosen:
            raise BlockConfigError(_no_match_message(rule, remaining, len(candidates) - len(remaining), skipped))
        for cand in chosen:
            block, preserved, note = block_for_conv(cand.conv, rule.block, rule.preserve)
            root.set_submodule(cand.path, block)
            report.replacements.append(
                Replacement(
                    path=cand.path,
                    stage=cand.stage,
                    rule=rule.where,
                    old=conv_summary(cand.conv),
                    block=rule.block["type"],
                    preserved=preserved,
                    note=note,
                    params_before=sum(p.numel() for p in cand.conv.parameters()),
                    params_after=sum(p.numel() for p in block.parameters()),
                )
            )
        chosen_paths = {c.path for c in chosen}
        remaining = [c for c in remaining if c.path not in chosen_paths]
    return report
