"""Reading checkpoints without running code, and the recipe stored in them (for eval and for resume).

A Lightning checkpoint is a pickle. ``read_checkpoint`` opens it with torch's safe unpickler
(``weights_only=True``): tensors, dicts, lists, strings and numbers load; a checkpoint that would import or
call anything else is refused with one line before any of it runs. convzoo stores its recipe and history
as plain data, so its own checkpoints always pass.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any

import torch

from .recipe import Recipe, RecipeError, apply_overrides, build_recipe
from .weights import RECIPE_KEY, SUFFIX, read_weights

# Keys a resumed run may change: how long it runs, how it logs and loads; not what it computes per step.
RESUME_SAFE = frozenset(
    {
        "train.max_epochs",
        "train.resume",
        "train.progress_bar",
        "train.log_every_n_steps",
        "train.torch_threads",
        "train.checkpoint_every_n_steps",
        "train.val_every",
        "data.num_workers",
        "data.val_batch_size",
        "eval.batch_size",
    }
)


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint's contents, loaded with ``weights_only=True``; a one-line ``RecipeError`` otherwise.

    A ``.safetensors`` file from ``tools/export.py --format safetensors`` reads as ``{"state_dict",
    "convzoo_recipe"}``: it evaluates, infers and exports like a checkpoint (it cannot resume: no optimizer).
    """
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"checkpoint {str(path)!r} not found; pass a .ckpt file from runs/<name>/checkpoints/")
    if path.suffix == SUFFIX:
        return read_weights(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL (\S+)", str(exc))  # torch's safe unpickler met an import it does not allow
        if found is None:  # not a pickle at all (a text file, random bytes): fall through to "could not be read"
            raise RecipeError(
                f"checkpoint {str(path)!r} could not be read (not a PyTorch checkpoint); is it a complete .ckpt file?"
            ) from None
        raise RecipeError(
            f"checkpoint {str(path)!r} refused: loading it would import and run Python code (GLOBAL {found[1]}); "
            "load only checkpoints written by convzoo (tensors and plain data)"
        ) from None
    except Exception as exc:  # noqa: BLE001 - a truncated or foreign file means the same thing to the user
        raise RecipeError(
            f"checkpoint {str(path)!r} could not be read ({type(exc).__name__}); is it a complete .ckpt file?"
        ) from None
    if not isinstance(ckpt, dict):
        raise RecipeError(f"checkpoint {str(path)!r} is not a Lightning checkpoint (a {type(ckpt).__name__})")
    return ckpt


def stored_recipe(checkpoint: str | Path, ckpt: dict[str, Any] | None = None) -> Recipe:
    """The recipe a checkpoint was trained with (saved in it by ``models.runner.train``)."""
    ckpt = read_checkpoint(checkpoint) if ckpt is None else ckpt
    if not isinstance(ckpt.get(RECIPE_KEY), dict):
        raise RecipeError(f"{checkpoint}: no recipe stored in this checkpoint; pass the config it was trained with")
    saved = dict(ckpt[RECIPE_KEY])
    return build_recipe(saved, name=saved.pop("name", "run"))


def eval_recipe(checkpoint: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """The stored recipe for evaluation: the full val set (the run's ``data.val_limit`` is dropped unless an
    override sets it), then ``overrides``."""
    stored = stored_recipe(checkpoint)
    cfg = stored.model_dump(mode="json", exclude={"name"})
    cfg["data"]["val_limit"] = None
    return build_recipe(apply_overrides(cfg, overrides), stored.name)


def flatten(cfg: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` → ``{"a.b": 1}`` (lists stay values)."""
    if not isinstance(cfg, dict) or not cfg:
        return {prefix: cfg}
    out: dict[str, Any] = {}
    for key, value in cfg.items():
        out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def changed_keys(old: Recipe, new: Recipe, old_model_partial: bool = False) -> list[str]:
    """Dotted keys whose values differ between two recipes (``name`` aside).

    With ``old_model_partial``, ``model.*`` keys that ``old`` lacks count as unchanged (their defaults): a
    checkpoint written by other code may store only the model keys its recipe file named.
    """
    a = flatten(old.model_dump(mode="json", exclude={"name"}))
    b = flatten(new.model_dump(mode="json", exclude={"name"}))
    keys = a.keys() | b.keys()
    if old_model_partial:
        keys = {k for k in keys if k in a or not k.startswith("model.")}
    return sorted(k for k in keys if a.get(k, "<unset>") != b.get(k, "<unset>"))


def check_resume(checkpoint: str | Path, recipe: Recipe) -> None:
    """Refuse to resume ``checkpoint`` with a recipe that differs from its own beyond ``RESUME_SAFE`` keys."""
    if Path(checkpoint).suffix == SUFFIX:
        raise RecipeError(
            f"train.resume: {str(checkpoint)!r} holds weights only (no optimizer state or epoch); "
            "resume from the run's .ckpt in runs/<name>/checkpoints/"
        )
    ckpt = read_checkpoint(checkpoint)
    if RECIPE_KEY not in ckpt:
        return  # written by another tool: Lightning's own loading decides
    unsafe = [k for k in changed_keys(stored_recipe(checkpoint, ckpt), recipe, True) if k not in RESUME_SAFE]
    if unsafe:
        shown = ", ".join(unsafe[:5]) + (f" and {len(unsafe) - 5} more" if len(unsafe) > 5 else "")
        raise RecipeError(
            f"train.resume: the recipe differs from the one {str(checkpoint)!r} was trained with ({shown}); "
            "resume with the run's own recipe (only "
            f"{', '.join(sorted(RESUME_SAFE - {'train.resume'}))} may change), or start a new run with name=<new name>"
        )
