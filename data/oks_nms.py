"""OKS-based non-maximum suppression of keypoint instances (as in SimpleBaseline/HRNet evaluation).

Two predictions of the same person from overlapping boxes would both be scored by COCOeval; one of them
is then a false positive. OKS-NMS keeps the higher-scoring one when their poses are closer than ``thr``.
"""

from __future__ import annotations

import numpy as np


def oks_to_many(
    kpt: np.ndarray, area: float, others: np.ndarray, other_areas: np.ndarray, sigmas: np.ndarray
) -> np.ndarray:
    """OKS of one pose ``(K, 2)`` with each of ``others`` ``(M, K, 2)``, using the mean of both areas ``(M,)``."""
    var = (2.0 * np.asarray(sigmas, dtype=np.float64)) ** 2
    d2 = ((others - kpt[None]) ** 2).sum(axis=-1)  # (M, K)
    scale = (area + other_areas)[:, None] / 2.0 + np.spacing(1)
    return np.exp(-d2 / var[None] / scale / 2.0).mean(axis=1)


def oks_nms(keypoints: np.ndarray, scores: np.ndarray, areas: np.ndarray, sigmas: np.ndarray, thr: float) -> list[int]:
    """Indices kept, best first: greedy by score, dropping poses with OKS > ``thr`` to a kept one.

    ``keypoints`` ``(N, K, 2)`` (one image), ``scores`` ``(N,)``, ``areas`` ``(N,)`` box areas in pixels².
    """
    order = np.argsort(-np.asarray(scores), kind="stable")
    keep: list[int] = []
    while order.size:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        oks = oks_to_many(keypoints[i], float(areas[i]), keypoints[rest], areas[rest], sigmas)
        order = rest[oks <= thr]
    return keep
