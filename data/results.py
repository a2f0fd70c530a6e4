"""Crop-frame predictions -> image coordinates -> COCO keypoint results entries for COCOeval."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from data.heatmap import HeatmapCodec


def crop_to_image(keypoints: np.ndarray | torch.Tensor, inv_affine: np.ndarray | torch.Tensor) -> np.ndarray:
    """Keypoints (N, K, 2) in crop pixels and per-sample inverse affines (N, 2, 3) -> image pixels (N, K, 2)."""
    kp = torch.as_tensor(keypoints, dtype=torch.float64).cpu().numpy()
    m = torch.as_tensor(inv_affine, dtype=torch.float64).cpu().numpy()
    return np.einsum("nkj,nij->nki", kp, m[:, :, :2]) + m[:, None, :, 2]


def coco_keypoint_results(
    keypoints: np.ndarray,
    keypoint_scores: np.ndarray,
    image_ids: np.ndarray | list[int],
    box_scores: np.ndarray | list[float],
    category_id: int = 1,
    visible_thr: float = 0.2,
) -> list[dict[str, Any]]:
    """Image-frame keypoints (N, K, 2) + scores (N, K) -> COCO results [{image_id, category_id, keypoints, score}].

    Instance score = box score x mean keypoint score over keypoints above `visible_thr` (0 if none are).
    """
    kp = np.asarray(keypoints, dtype=np.float64)
    ks = np.asarray(keypoint_scores, dtype=np.float64)
    results = []
    for i in range(kp.shape[0]):
        confident = ks[i] > visible_thr
        kpt_score = float(ks[i][confident].mean()) if confident.any() else 0.0
        triplets = np.concatenate([kp[i], ks[i][:, None]], axis=1)
        results.append(
            {
                "image_id": int(image_ids[i]),
                "category_id": int(category_id),
                "keypoints": [round(float(v), 3) for v in triplets.reshape(-1)],
                "score": kpt_score * float(box_scores[i]),
            }
        )
    return results


def heatmaps_to_coco_results(
    heatmaps: torch.Tensor, meta: dict[str, Any], codec: HeatmapCodec, category_id: int = 1
) -> list[dict[str, Any]]:
    """Decode a batch of heatmaps (N, K, h, w) with its collated `meta` into COCO keypoint results entries."""
    coords, scores = codec.decode(heatmaps)
    image_kp = crop_to_image(coords, meta["inv_affine"])
    return coco_keypoint_results(
        image_kp,
        scores.cpu().numpy(),
        torch.as_tensor(meta["image_id"]).tolist(),
        torch.as_tensor(meta["score"]).tolist(),
        category_id,
    )
