"""Block rules: which convolutions of a module become which registry block.

A rule is a dict of selectors plus a block spec, e.g.
``{stages: [2, 3], kernel_size: 3, block: {type: dcnv2}, preserve: true}``. Selectors are ANDed:

- ``stages``: backbone stage indices (timm ``feature_info``; resnet: 0 = stem, 1..4 = layer1..layer4);
- ``kernel_size`` / ``stride``: an int (square) or ``[h, w]``;
- ``name``: a glob (or list of globs, any may match) on the module path, e.g. ``layer3.*.conv2``;
- ``every_nth``: within each stage keep the n-th, 2n-th, ... match (1-based), then
- ``first_n``: within each stage keep the first n remaining matches.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch.nn as nn

from convblocks import BLOCKS, BlockConfigError

from .config import int_list, require_mapping
from .sections import Section, validate_section

SELECTORS = ("stages", "kernel_size", "stride", "name", "first_n", "every_nth")
RULE_KEYS = (*SELECTORS, "block", "preserve")


class RuleSection(Section):
    """One ``blocks:`` rule: selectors (all optional), the block, ``preserve`` (values checked by ``parse_rule``)."""

    what: ClassVar[str] = "selector"
    stages: Any = None
    name: Any = None
    kernel_size: Any = None
    stride: Any = None
    first_n: Any = None
    every_nth: Any = None
    block: Any
    preserve: Any = True


GEOMETRY_KEYS = ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups", "bias")


@dataclass(frozen=True)
class Candidate:
    """A plain ``nn.Conv2d`` that a rule may replace: its path, the module and its stage (None: unknown)."""

    path: str
    conv: nn.Conv2d
    stage: int | None


@dataclass
class BlockRule:
    """One parsed rule; ``where`` is its key path for error messages (``backbone.blocks[1]``)."""

    where: str
    block: dict[str, Any]
    preserve: bool = True
    stages: list[int] | None = None
    kernel_size: tuple[int, int] | None = None
    stride: tuple[int, int] | None = None
    name: list[str] | None = None
    first_n: int | None = None
    every_nth: int | None = None
    raw: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        """The rule as it was written, in one line."""
        sel = {k: v for k, v in self.raw.items() if k in SELECTORS}
        return f"{sel} -> {self.block}"

    def matches(self, cand: Candidate) -> bool:
        """Whether the per-module selectors (all but ``first_n``/``every_nth``) accept ``cand``."""
        conv = cand.conv
        if self.stages is not None and cand.stage not in self.stages:
            return False
        if self.kernel_size is not None and tuple(conv.kernel_size) != self.kernel_size:
            return False
        if self.stride is not None and tuple(conv.stride) != self.stride:
            return False
        return self.name is None or any(fnmatch.fnmatchcase(cand.path, pat) for pat in self.name)

    def select(self, candidates: Sequence[Candidate]) -> list[Candidate]:
        """The candidates this rule replaces, in order; ``every_nth`` then ``first_n`` count per stage."""
        chosen: list[Candidate] = []
        seen: dict[int | None, int] = {}
        kept: dict[int | None, int] = {}
        for cand in candidates:
            if not self.matches(cand):
                continue
            seen[cand.stage] = seen.get(cand.stage, 0) + 1
            if self.every_nth is not None and seen[cand.stage] % self.every_nth:
                continue
            if self.first_n is not None and kept.get(cand.stage, 0) >= self.first_n:
                continue
            kept[cand.stage] = kept.get(cand.stage, 0) + 1
            chosen.append(cand)
        return chosen


def _pair(value: Any, where: str) -> tuple[int, int]:
    vals = int_list(value, where, minimum=1)
    if len(vals) == 1:
        return (vals[0], vals[0])
    if len(vals) == 2:
        return (vals[0], vals[1])
    raise BlockConfigError(f"{where}: expected an int or [h, w], got {value!r}")


def _block_spec(value: Any, where: str) -> dict[str, Any]:
    spec = {"type": value} if isinstance(value, str) else dict(require_mapping(value, where))
    if "type" not in spec:
        raise BlockConfigError(f"{where}: block spec has no 'type'; add e.g. type: dcnv2")
    entry = BLOCKS.get(spec["type"]) if isinstance(spec["type"], str) else None
    if entry is None:
        raise BlockConfigError(f"{where}.type: expected a block name, got {spec['type']!r}")
    if entry.kind != "conv":
        raise BlockConfigError(
            f"{where}: block '{entry.name}' is a {entry.kind} block and cannot replace a convolution; "
            "use a conv block (coordconv, deform, dcnv2, dynamic, pyconv) or put it in the model's neck"
        )
    for key in GEOMETRY_KEYS:
        if key in spec:
            raise BlockConfigError(
                f"{where}.{key}: set by the convolution being replaced; remove it from the block spec "
                "(select convs with kernel_size/stride instead)"
            )
    return spec


def parse_rule(raw: Any, where: str) -> BlockRule:
    """Validate one rule dict and turn it into a ``BlockRule``."""
    validate_section(RuleSection, raw, where, BlockConfigError)
    raw = dict(raw)  # as written: an absent selector selects everything
    preserve = raw.get("preserve", True)
    if not isinstance(preserve, bool):
        raise BlockConfigError(f"{where}.preserve: expected true or false, got {preserve!r}")
    rule = BlockRule(where=where, block=_block_spec(raw["block"], f"{where}.block"), preserve=preserve, raw=raw)
    if "stages" in raw:
        rule.stages = int_list(raw["stages"], f"{where}.stages", minimum=0)
    if "kernel_size" in raw:
        rule.kernel_size = _pair(raw["kernel_size"], f"{where}.kernel_size")
    if "stride" in raw:
        rule.stride = _pair(raw["stride"], f"{where}.stride")
    if "name" in raw:
        names = raw["name"] if isinstance(raw["name"], list) else [raw["name"]]
        if not names or not all(isinstance(n, str) and n for n in names):
            raise BlockConfigError(f"{where}.name: expected a glob string or a list of them, got {raw['name']!r}")
        rule.name = names
    for key in ("first_n", "every_nth"):
        if key in raw:
            value = raw[key]
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise BlockConfigError(f"{where}.{key}: expected an int >= 1, got {value!r}")
            setattr(rule, key, value)
    return rule


def parse_rules(rules: Any, where: str) -> list[BlockRule]:
    """Validate a ``blocks:`` list (None or empty: no rules)."""
    if rules is None:
        return []
    if isinstance(rules, Mapping) or not isinstance(rules, (list, tuple)):
        raise BlockConfigError(
            f"{where}: expected a list of rules (- {{stages: ..., block: ...}}), got {type(rules).__name__}"
        )
    return [parse_rule(r, f"{where}[{i}]") for i, r in enumerate(rules)]
