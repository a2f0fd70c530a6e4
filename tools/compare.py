"""Compare block variants: ``python tools/compare.py COMPARISON.yaml | CONFIG... [key.path=value ...]``.

Trains and evaluates every variant with every seed (runs already finished are reused, interrupted ones
resume), then writes ``results.md``, ``summary.csv``, ``runs.csv``, ``comparison.json``, ``ap.png`` and
``curves.png`` into ``runs/compare/<name>/`` (or ``--out``). Examples::

    python tools/compare.py configs/compare/pose_blocks.yaml
    python tools/compare.py configs/pose_baseline.yaml configs/pose_coordconv.yaml --seeds 3
    python tools/compare.py configs/compare/pose_blocks.yaml --seeds 1 train.max_epochs=1   # smoke run
    python tools/compare.py configs/compare/pose_blocks.yaml --variants coordconv   # part of it (+ baseline)
"""

from __future__ import annotations

import argparse

from _cli import run

from models.recipe import RecipeError, check_run_name


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "inputs", nargs="+", help="a comparison YAML, or recipe YAMLs (first = baseline); then overrides"
    )
    parser.add_argument("--seeds", type=int, help="number of seeds (0..N-1); default: the comparison's, else 3")
    parser.add_argument("--name", help="comparison name (folder runs/compare/<name>)")
    parser.add_argument("--out", help="output folder (default runs/compare/<name>)")
    parser.add_argument("--bootstrap", type=int, help="bootstrap replicates for the ΔAP intervals (default 1000)")
    parser.add_argument("--variants", nargs="+", help="run and report only these variants (and the baseline)")
    parser.add_argument("--device", default="cpu", help="device for the latency measurement (cpu, cuda)")
    args = parser.parse_intermixed_args()
    overrides = [a for a in args.inputs if "=" in a]
    files = [a for a in args.inputs if "=" not in a]
    if not files:
        raise RecipeError("no comparison YAML or recipe given; e.g. configs/compare/pose_blocks.yaml")
    if args.name is not None:
        check_run_name(args.name, "--name")
    from models.compare import from_configs, is_comparison, load_spec, run_comparison, select_variants

    updates = {
        "seeds": None if args.seeds is None else list(range(args.seeds)),
        "name": args.name,
        "out_dir": args.out,
        "bootstrap": args.bootstrap,
    }
    updates = {k: v for k, v in updates.items() if v is not None}  # unset options keep the comparison's values
    if len(files) == 1 and is_comparison(files[0]):
        spec, folder = load_spec(files[0], **updates)
    else:
        spec, folder = from_configs(files, **updates), "."
    if args.variants:
        spec = select_variants(spec, args.variants)
    result = run_comparison(spec, folder, overrides, device=args.device)
    print(f"\n{result.table}\n")
    for name, path in result.files.items():
        print(f"{name:>16}: {path}")
    print(f"{'time':>16}: {result.seconds / 60:.1f} min")
    return 0


if __name__ == "__main__":
    raise SystemExit(run(main))
