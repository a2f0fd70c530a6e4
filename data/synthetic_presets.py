"""Named difficulty settings of the synthetic set (``data.synthetic.preset``); no heavy imports, so recipes
validate without numpy or OpenCV."""

from __future__ import annotations

from typing import Any

# Named difficulty settings (``data.synthetic.preset``); keys given beside a preset override it.
#   standard: up to 4 people of 30-100 % of the image height, 6-19 background shapes (the generator's defaults).
#   easy: up to 2 people of 50-100 %, 2-7 shapes: less occlusion, fewer small figures and distractors, the same
#         poses, truncation, keypoints and COCO format. The CPU-scale recipes train on it (see docs/data.md).
SYNTH_PRESETS: dict[str, dict[str, Any]] = {
    "standard": {},
    "easy": {"max_people": 2, "min_person_frac": 0.5, "min_clutter": 2, "max_clutter": 8},
}
