"""Export: ``python tools/export.py [CONFIG] --checkpoint PATH --format onnx|torchscript|safetensors``.

Exports the network (image batch → the head's raw outputs; decoding stays in Python, see docs/export.md) with a
dynamic batch, and dynamic H×W where the model allows it, then runs the file (onnxruntime on CPU for ONNX) at batch
1 and 3 against PyTorch and prints the largest difference. CONFIG may be omitted: the checkpoint stores its recipe.
Without ``--checkpoint`` the model keeps its initial weights (to check that a recipe exports). ``safetensors``
writes the weights and the recipe only, for sharing: tools read it like a checkpoint, and loading it runs no code.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from _cli import run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", nargs="?", help="recipe YAML (default: the one stored in the checkpoint)")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. model.input_size=[128,96]")
    parser.add_argument("--checkpoint", help="a .ckpt from runs/<name>/checkpoints/")
    parser.add_argument(
        "--format",
        choices=("onnx", "torchscript", "safetensors"),
        default="onnx",
        help="default onnx; safetensors: the weights and recipe only, for sharing (loads without running code)",
    )
    parser.add_argument("--out", help="output file (default: next to the checkpoint, or runs/export/<name>.<ext>)")
    parser.add_argument("--static-size", action="store_true", help="fixed H×W even where the model allows any")
    parser.add_argument(
        "--dcn-decompose", action="store_true", help="DCN as grid_sample + matmul instead of ONNX DeformConv"
    )
    args = parser.parse_args()
    import torch  # after parsing: --help answers without loading torch

    from models.checkpoint import stored_recipe
    from models.export import dynamic_size, example_input, export_model, export_network, max_difference
    from models.recipe import apply_overrides, build_recipe, load_recipe
    from models.runner import build_module, load_weights
    from models.weights import SUFFIX, save_weights

    if args.config and "=" in args.config:  # only overrides were given
        args.overrides, args.config = [args.config, *args.overrides], None
    if args.config:
        recipe = load_recipe(args.config, args.overrides)
    elif args.checkpoint:
        stored = stored_recipe(args.checkpoint)
        recipe = build_recipe(apply_overrides(stored.model_dump(mode="json"), args.overrides), stored.name)
    else:
        parser.error("pass a CONFIG, a --checkpoint, or both")
    module = build_module(recipe)
    if args.checkpoint:
        load_weights(module, args.checkpoint)
    model = module.model.eval()
    ext = {"onnx": ".onnx", "torchscript": ".pt", "safetensors": SUFFIX}[args.format]
    default = Path(args.checkpoint).with_suffix(ext) if args.checkpoint else Path("runs/export") / f"{recipe.name}{ext}"
    if args.format == "safetensors":
        state = module.state_dict()
        path = save_weights(state, recipe.model_dump(mode="json"), args.out or default)
        n = sum(v.numel() for v in state.values())
        print(f"{recipe.name}: {path} (safetensors, {path.stat().st_size / 1e6:.1f} MB, {n:,} values)")
        print(f"use it as a checkpoint: python tools/eval.py --checkpoint {path} (or infer.py, export.py)")
        return 0
    example = example_input(recipe, batch=2)
    dynamic = dynamic_size(model) and not args.static_size
    path = export_model(model, example, args.out or default, args.format, dynamic, args.dcn_decompose)
    _, names = export_network(model)
    h, w = example.shape[-2:]
    print(f"{recipe.name}: {path} ({args.format}, {path.stat().st_size / 1e6:.1f} MB)")
    print(f"input: images (batch, 3, {'H, W' if dynamic else f'{h}, {w}'}), float32, normalised as in training")
    print(f"outputs: {', '.join(names)}")
    batches = [example_input(recipe, 1), example_input(recipe, 3)]
    if dynamic:  # and another size, a multiple of the backbone's stride
        batches.append(torch.nn.functional.pad(example_input(recipe, 2), (0, 32, 0, 32)))
    sizes = ", ".join("x".join(str(s) for s in (b.shape[0], *b.shape[2:])) for b in batches)
    print(f"max |exported - PyTorch| at batch x H x W {sizes}: {max_difference(model, path, batches):.2e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run(main))
