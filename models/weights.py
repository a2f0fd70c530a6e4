"""Weights for sharing: a ``.safetensors`` file with the model's tensors and its recipe as JSON metadata.

safetensors holds tensors and strings only, so opening one cannot run code (unlike any pickle). convzoo's
tools read it wherever they take a checkpoint (``read_checkpoint``): ``eval.py``, ``infer.py``, ``export.py``.
It has no optimizer state, so a training cannot resume from it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from .recipe import RecipeError

RECIPE_KEY = "convzoo_recipe"  # where a checkpoint (and a weights file's metadata) keeps the recipe
SUFFIX = ".safetensors"


def save_weights(state_dict: dict[str, torch.Tensor], recipe: dict[str, Any], path: str | Path) -> Path:
    """Write ``state_dict`` (a Lightning module's: keys ``model.…``) and ``recipe`` to ``path``."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # safetensors stores each tensor once: copies drop views and tied storage (the file stays self-contained)
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state_dict.items()}
    save_file(tensors, str(path), metadata={RECIPE_KEY: json.dumps(recipe), "format": "pt"})
    return path


def read_weights(path: str | Path) -> dict[str, Any]:
    """``{"state_dict": ..., "convzoo_recipe": ...}`` from a file written by ``save_weights`` (checkpoint-shaped)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise RecipeError(
            f"weights {str(path)!r} could not be read ({exc}); is it a complete .safetensors file?"
        ) from None
    out: dict[str, Any] = {"state_dict": state}
    if RECIPE_KEY in meta:
        try:
            out[RECIPE_KEY] = json.loads(meta[RECIPE_KEY])
        except json.JSONDecodeError:
            raise RecipeError(f"weights {str(path)!r}: its stored recipe is not valid JSON; pass the config") from None
    return out
