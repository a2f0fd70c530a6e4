"""Keypoint metadata (names, flip pairs, skeleton, OKS sigmas): from a COCO category, with COCO-17 defaults."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from data.errors import DataError

COCO_KEYPOINT_NAMES: tuple[str, ...] = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
    "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle",
)  # fmt: skip
# 1-based limb pairs, exactly as in the COCO person category.
COCO_SKELETON: tuple[tuple[int, int], ...] = (
    (16, 14), (14, 12), (17, 15), (15, 13), (12, 13), (6, 12), (7, 13), (6, 7), (6, 8),
    (7, 9), (8, 10), (9, 11), (2, 3), (1, 2), (1, 3), (2, 4), (3, 5), (4, 6), (5, 7),
)  # fmt: skip
# Per-keypoint OKS sigmas used by COCOeval for the 17 COCO keypoints.
COCO_SIGMAS: tuple[float, ...] = (
    0.026, 0.025, 0.025, 0.035, 0.035, 0.079, 0.079, 0.072, 0.072,
    0.062, 0.062, 0.107, 0.107, 0.087, 0.087, 0.089, 0.089,
)  # fmt: skip


def flip_pairs_from_names(names: tuple[str, ...]) -> tuple[tuple[int, int], ...]:
    """0-based (left, right) index pairs found by matching 'left'/'right' in keypoint names."""
    index = {n: i for i, n in enumerate(names)}
    pairs = []
    for i, name in enumerate(names):
        if "left" in name:
            other = name.replace("left", "right")
            if other in index:
                pairs.append((i, index[other]))
    return tuple(pairs)


@dataclass(frozen=True)
class KeypointMeta:
    """What a pose model needs to know about the K keypoints of one category."""

    names: tuple[str, ...]
    flip_pairs: tuple[tuple[int, int], ...]  # 0-based (left, right)
    skeleton: tuple[tuple[int, int], ...]  # 1-based, COCO convention
    sigmas: tuple[float, ...]  # OKS sigmas, length K
    category_id: int = 1

    @property
    def num_keypoints(self) -> int:
        return len(self.names)

    def flip_index(self) -> np.ndarray:
        """(K,) permutation mapping each keypoint to its mirror partner (identity for centre keypoints)."""
        perm = np.arange(self.num_keypoints)
        for a, b in self.flip_pairs:
            perm[a], perm[b] = b, a
        return perm

    @classmethod
    def coco(cls) -> KeypointMeta:
        """COCO's 17-keypoint person metadata."""
        return cls(COCO_KEYPOINT_NAMES, flip_pairs_from_names(COCO_KEYPOINT_NAMES), COCO_SKELETON, COCO_SIGMAS)

    @classmethod
    def from_category(cls, category: dict[str, Any]) -> KeypointMeta:
        """Read names/skeleton/sigmas from a COCO category dict; fall back to COCO-17 defaults where absent."""
        default = cls.coco()
        names = tuple(category.get("keypoints") or default.names)
        if "sigmas" in category:
            sigmas = tuple(float(s) for s in category["sigmas"])
        elif names == default.names:
            sigmas = default.sigmas
        else:
            raise DataError(
                f"category {category.get('name', category.get('id'))!r} has {len(names)} non-COCO keypoints but "
                "no 'sigmas'; add a 'sigmas' list (one OKS sigma per keypoint) to the category"
            )
        if len(sigmas) != len(names):
            raise DataError(
                f"category {category.get('id')} has {len(names)} keypoints but {len(sigmas)} sigmas; "
                "make 'sigmas' one value per keypoint"
            )
        skeleton = tuple(tuple(int(v) for v in pair) for pair in category.get("skeleton") or default.skeleton)
        return cls(names, flip_pairs_from_names(names), skeleton, sigmas, int(category.get("id", 1)))
