"""What a pose head must provide to be trained and evaluated: its targets, loss, and decoding with flip test.

Like mmpose's heads, a head owns its training contract; ``PoseModule`` only calls it::

    targets: tuple[str, ...]          # targets the data encodes for the loss (``data.targets``), e.g. ("heatmap",)
    loss(out, batch) -> Tensor        # scalar; batch holds image, keypoints (N, K, 3), target_weight (N, K), targets
    predict(out, flipped=None, flip_index=None, codec=None) -> (coords (N, K, 2), scores (N, K))

``out`` is the head's forward output; ``flipped`` its output on the mirrored crops (flip test, else None) with
``flip_index`` the left/right keypoint swap; ``codec`` is the data's ``HeatmapCodec`` (crop size, stride, sigma,
refinement) for heads that decode with it. Coordinates are crop pixels.
"""

from __future__ import annotations

import inspect
from typing import Any

from convblocks import BlockConfigError
from data.errors import DataError
from data.targets import check_targets

METHODS = {
    "loss": "loss(out, batch) -> scalar tensor",
    "predict": "predict(out, flipped=None, flip_index=None, codec=None) -> (coords (N, K, 2), scores (N, K))",
}


def check_pose_head(head: Any, where: str = "model.head") -> tuple[str, ...]:
    """The targets ``head`` asks the data for, or a one-line ``BlockConfigError`` naming what it lacks."""
    name = type(head).__name__
    lacks = [sig for method, sig in METHODS.items() if not callable(getattr(head, method, None))]
    if not hasattr(head, "targets"):
        lacks.insert(0, "targets (a tuple of target names, e.g. ('heatmap',) or ())")
    if lacks:
        raise BlockConfigError(
            f"{where}: head {name} cannot be trained: it lacks {'; '.join(lacks)} (see models/head_contract.py)"
        )
    predict = inspect.signature(head.predict).parameters
    if not all(p in predict for p in ("flipped", "flip_index", "codec")) and not any(
        p.kind is p.VAR_KEYWORD for p in predict.values()
    ):
        raise BlockConfigError(f"{where}: head {name}'s predict must accept {METHODS['predict']}")
    try:
        return check_targets(head.targets, f"{where} ({name}).targets")
    except DataError as exc:
        raise BlockConfigError(str(exc)) from None
