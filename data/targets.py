"""Training targets a pose head asks for: name → encoder of one person's keypoints, registered like blocks.

Every pose sample carries ``image``, ``keypoints`` ``(K, 3)`` (crop pixels, visibility), ``target_weight``
``(K,)`` and ``meta``; a head lists any further targets its loss reads in ``targets`` (e.g. ``("heatmap",)``)
and the dataset encodes only those. A new target is a function registered with ``@register_target``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from data.errors import DataError
from data.heatmap import HeatmapCodec

# codec (crop size, heatmap stride/sigma from ``data.heatmap``), keypoints (K, 2) crop pixels, visible (K,) → array
TargetEncoder = Callable[[HeatmapCodec, np.ndarray, np.ndarray], np.ndarray]

ALWAYS = ("image", "keypoints", "target_weight", "meta")  # in every pose sample, whatever the head asks for
TARGETS: dict[str, TargetEncoder] = {}


def register_target(name: str, *, force: bool = False) -> Callable[[TargetEncoder], TargetEncoder]:
    """Decorator: register ``f(codec, keypoints (K, 2), visible (K,)) -> np.ndarray`` as target ``name``."""

    def decorator(encoder: TargetEncoder) -> TargetEncoder:
        if (name in TARGETS and TARGETS[name] is not encoder and not force) or name in ALWAYS:
            raise DataError(f"target name '{name}' is taken; pick another name or pass force=True to replace it")
        TARGETS[name] = encoder
        return encoder

    return decorator


def check_targets(names: tuple[str, ...] | list[str], where: str = "targets") -> tuple[str, ...]:
    """``names`` as a tuple of encodable targets (``ALWAYS`` ones dropped), else a one-line ``DataError``."""
    if isinstance(names, str) or not all(isinstance(n, str) for n in names):
        raise DataError(f"{where}: expected a tuple of target names such as ('heatmap',), got {names!r}")
    for name in names:
        if name not in TARGETS and name not in ALWAYS:
            known = ", ".join(sorted([*TARGETS, *ALWAYS]))
            raise DataError(f"{where}: unknown target '{name}'; known: {known} (add one with @register_target)")
    return tuple(n for n in names if n not in ALWAYS)


def encode_targets(
    names: tuple[str, ...], codec: HeatmapCodec, keypoints: np.ndarray, visible: np.ndarray
) -> dict[str, np.ndarray]:
    """The arrays of ``names`` for one person: keypoints ``(K, 2)`` in crop pixels, visibility ``(K,)``."""
    return {name: TARGETS[name](codec, keypoints, visible) for name in names}


@register_target("heatmap")
def heatmap_target(codec: HeatmapCodec, keypoints: np.ndarray, visible: np.ndarray) -> np.ndarray:
    """Gaussian heatmaps ``(K, h, w)`` at ``data.heatmap``'s stride and sigma (SimpleBaseline's target)."""
    return codec.encode(keypoints, visible)[0]
