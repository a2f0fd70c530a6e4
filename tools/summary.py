"""Print what block surgery did to a config's backbone or model: replaced modules, params and FLOPs per stage.

Usage: python tools/summary.py configs/models/pyconvresnet50.yaml [--input-size 224 224] [--json out.json]
The config holds a ``model:`` section (any registered model) or a ``backbone:`` section, itself or through
its ``_base_`` files (a training recipe works as it is).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from models.recipe import read_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", help="YAML config with a model: or backbone: section")
    parser.add_argument("--input-size", type=int, nargs=2, metavar=("H", "W"), help="FLOPs input size")
    parser.add_argument("--json", metavar="PATH", help="also write the description as JSON")
    parser.add_argument("--no-baseline", action="store_true", help="skip the before-surgery columns")
    args = parser.parse_args(argv)
    try:
        cfg = read_config(Path(args.config).resolve())  # follows _base_, one-line errors
        if not ({"model", "backbone"} & set(cfg)):
            raise ValueError(f"{args.config}: no 'model:' or 'backbone:' section; add one (see docs/models.md)")
        from models import build_backbone, build_model, describe

        model = build_model(cfg["model"]) if "model" in cfg else build_backbone(cfg["backbone"])
        desc = describe(model, input_size=args.input_size, baseline=not args.no_baseline)
    except ValueError as exc:  # BlockConfigError is a ValueError: one line, no traceback
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(desc["table"])
    if args.json:
        Path(args.json).write_text(json.dumps({k: v for k, v in desc.items() if k != "table"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
