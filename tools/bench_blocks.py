"""Benchmark every conv block against a plain 3×3 conv and against its peers, in the same run.

Per feature-map shape: parameters, forward GFLOPs (torch.utils.flop_counter: convs and matmuls), the
memory autograd keeps for backward, the peak memory of a training step, median forward (eval, no grad)
and forward+backward times, each as a ratio to the plain conv and to the block's peer. Timings are taken
round-robin (one iteration of every candidate per round) so that load drifting on the machine hits all
candidates alike.

    python tools/bench_blocks.py                      # CPU, default shapes, JSON to runs/bench_blocks.json
    python tools/bench_blocks.py --device cuda --out runs/bench_blocks_cuda.json
    python tools/bench_blocks.py --quick              # small shapes, few repeats (make demo)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

DEFAULT_SHAPES = ["16x64x64x48", "16x256x16x12"]
QUICK_SHAPES = ["4x64x32x24", "4x128x16x12"]


def build_parser() -> argparse.ArgumentParser:
    """The options (stdlib only: defined before torch is imported, so ``--help`` answers at once)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", nargs="+", help=f"NxCxHxW (default {' '.join(DEFAULT_SHAPES)})")
    parser.add_argument("--blocks", nargs="+", help="subset of candidates (default: all)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--reps", type=int, default=None, help="timed rounds (median reported)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--compile", action="store_true", help="torch.compile every candidate")
    parser.add_argument("--amp", action="store_true", help="bf16 autocast")
    parser.add_argument("--quick", action="store_true", help="small shapes, 3 rounds (smoke run)")
    parser.add_argument(
        "--malloc",
        choices=("keep", "system"),
        default="keep",
        help="keep: glibc keeps freed memory for reuse, as tools/train.py does (default); system: glibc's defaults",
    )
    parser.add_argument("--out", default="runs/bench_blocks.json")
    return parser


if __name__ == "__main__":
    build_parser().parse_args()  # --help and bad options answer before torch and the blocks are imported

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
from _cli import machine_info  # noqa: E402
from bench_peers import PEERS  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

import convblocks  # noqa: E402
from convblocks.kernels import BACKENDS, use_backend  # noqa: E402
from models.allocator import keep_freed_memory  # noqa: E402


class WithBackend(nn.Module):
    """``block`` run with the named backends of its ops (``convblocks.kernels.use_backend``): a variant to time."""

    def __init__(self, block: nn.Module, backends: dict[str, str]) -> None:
        super().__init__()
        self.block, self.backends = block, backends

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with use_backend(**self.backends):
            return self.block(x)


def with_backend(name: str, **backends_and_options: str | int) -> Callable[[int], nn.Module]:
    """Factory of block ``name`` (options: its arguments) run with the backends named (keys of ``BACKENDS``)."""
    backends = {k: v for k, v in backends_and_options.items() if k in BACKENDS}
    options = {k: v for k, v in backends_and_options.items() if k not in BACKENDS}
    return lambda c: WithBackend(convblocks.build_block(name, in_channels=c, out_channels=c, **options), backends)


# label → (factory(channels) -> module, peer label)
CANDIDATES: dict[str, tuple[Callable[[int], nn.Module], str | None]] = {
    "conv": (lambda c: convblocks.build_block("conv", in_channels=c, out_channels=c), None),
    "coordconv": (
        lambda c: convblocks.build_block("coordconv", in_channels=c, out_channels=c),
        "ref_coordconv_rebuild",
    ),
    "deform": (lambda c: convblocks.build_block("deform", in_channels=c, out_channels=c), "tv_dcnv2"),
    "dcnv2": (lambda c: convblocks.build_block("dcnv2", in_channels=c, out_channels=c), "tv_dcnv2"),
    "dcnv2[native]": (  # pure PyTorch (sampling + matmul): on CUDA, the alternative to torchvision's kernel
        with_backend("dcnv2", deform_conv2d="native"),
        "tv_dcnv2",
    ),
    "dynamic": (
        lambda c: convblocks.build_block("dynamic", in_channels=c, out_channels=c),
        "ref_dynamic_batchgroups",
    ),
    "dynamic[grouped]": (
        with_backend("dynamic", dynamic_conv2d="grouped"),
        "ref_dynamic_batchgroups",
    ),
    "dynamic[unfold]": (
        with_backend("dynamic", dynamic_conv2d="unfold"),
        "ref_dynamic_batchgroups",
    ),
    "dynamic[mixture]": (
        with_backend("dynamic", dynamic_conv2d="mixture"),
        "ref_dynamic_batchgroups",
    ),
    "pyconv": (
        lambda c: convblocks.build_block("pyconv", in_channels=c, out_channels=c, levels=4),
        "ref_pyconv4_grouped",
    ),
    "pyconv[direct]": (
        with_backend("pyconv", pyconv2d="direct", levels=4),
        "ref_pyconv4_grouped",
    ),
}
CANDIDATES.update({name: (lambda c, cls=cls: cls(c, c), None) for name, cls in PEERS.items()})


def parse_shape(text: str) -> tuple[int, int, int, int]:
    parts = text.lower().split("x")
    if len(parts) != 4 or not all(p.isdigit() for p in parts):
        raise ValueError(f"shape '{text}' must look like NxCxHxW, e.g. 16x64x64x48")
    n, c, h, w = (int(p) for p in parts)
    return n, c, h, w


def to_memory_format(module: nn.Module, fmt: torch.memory_format) -> nn.Module:
    """Put 4-D parameters in ``fmt``. ``Module.to(memory_format=...)`` raises on the dynamic conv's 5-D
    kernel bank ``(K, C_out, C_in, kh, kw)``, so the bench converts parameter by parameter."""
    with torch.no_grad():
        for p in module.parameters():
            if p.dim() == 4:
                p.data = p.data.contiguous(memory_format=fmt)
    return module


def forward_flops(module: nn.Module, x: torch.Tensor) -> int:
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        module(x)
    return counter.get_total_flops()


def saved_for_backward_bytes(module: nn.Module, x: torch.Tensor) -> int:
    """Bytes of distinct tensors autograd keeps between forward and backward (activation memory)."""
    seen: dict[tuple[int, int], int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        if not isinstance(t, nn.Parameter) and t.data_ptr() != x.data_ptr():
            seen[(t.untyped_storage().data_ptr(), t.device.index or 0)] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        module(x)
    return sum(seen.values())


CPU_ACTIVITY = torch.profiler.ProfilerActivity.CPU


@contextlib.contextmanager
def quiet_stderr():
    """Silence file descriptor 2 for a moment: the profiler's C++ side logs every start and stop there."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def peak_step_bytes(step, device: torch.device) -> int:
    """The most memory one training step holds above what it started with (its activations, gradients
    and scratch; not the input or the parameters). CUDA: the caching allocator's peak. CPU: the running
    sum of the profiler's allocation and free events, in time order."""
    if device.type == "cuda":
        sync(device)
        start = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        step()
        sync(device)
        return torch.cuda.max_memory_allocated(device) - start
    with quiet_stderr(), torch.profiler.profile(activities=[CPU_ACTIVITY], profile_memory=True) as prof:
        step()
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    held = peak = 0
    for e in sorted(events, key=lambda e: e.start_ns()):
        held += e.nbytes()
        peak = max(peak, held)
    return peak


def clear_grads(module: nn.Module, x: torch.Tensor) -> None:
    """As a training loop does before each step: ``optimizer.zero_grad()`` sets gradients to None."""
    module.zero_grad(set_to_none=True)
    x.grad = None


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def make_steps(module: nn.Module, x: torch.Tensor, xg: torch.Tensor, device: torch.device, amp: bool):
    def autocast():
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp)

    def forward() -> None:
        with torch.no_grad(), autocast():
            module(x)

    def train_step() -> None:
        with autocast():
            out = module(xg)
        out.float().sum().backward()

    return forward, train_step


def bench_shape(shape, names, device, reps, warmup, channels_last, compile_, amp) -> list[dict]:
    """One row per candidate. A candidate that cannot run under the options (a peer's kernel without
    bf16 support, say) gets an ``error`` and no times instead of stopping the whole run."""
    n, c, h, w = shape
    torch.manual_seed(0)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(n, c, h, w, device=device).contiguous(memory_format=fmt)
    xg = x.clone().requires_grad_()
    rows, steps, modules = [], {}, {}
    if compile_:
        # Each shape compiles afresh with static shapes, the graph a fixed-size training run would get (without
        # the reset the second shape would recompile with dynamic shapes).
        torch._dynamo.reset()
    for name in names:
        factory, peer = CANDIDATES[name]
        row = {"shape": list(shape), "block": name, "peer": peer, "fwd_times": [], "train_times": []}
        rows.append(row)
        try:
            module = to_memory_format(factory(c).to(device), fmt)
            row["params"] = sum(p.numel() for p in module.parameters())
            row["gflops"] = forward_flops(module.eval(), x) / 1e9
            module.train()
            row["saved_mb"] = saved_for_backward_bytes(module, xg) / 2**20
            run = torch.compile(module) if compile_ else module
            candidate_steps = make_steps(run, x, xg, device, amp)
            for step in candidate_steps:  # warm-up (and compilation) outside the timed rounds
                for _ in range(warmup):
                    step()
            clear_grads(module, xg)
        except (RuntimeError, NotImplementedError, ValueError, TypeError) as exc:
            row["error"] = f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1][:200]}"
            print(f"bench_blocks: {name} at {'x'.join(map(str, shape))} cannot run: {row['error']}", flush=True)
            continue
        modules[name], steps[name] = module, candidate_steps
    timed = [(name, row) for name, row in zip(names, rows, strict=True) if name in steps]
    for phase, key in ((0, "fwd_times"), (1, "train_times")):
        for _ in range(reps):
            for name, row in timed:
                step = steps[name][phase]
                if phase == 1:
                    clear_grads(modules[name], xg)
                sync(device)
                t0 = time.perf_counter()
                step()
                sync(device)
                row[key].append(time.perf_counter() - t0)
    for name, row in timed:
        clear_grads(modules[name], xg)
        row["peak_mb"] = peak_step_bytes(steps[name][1], device) / 2**20
        row["fwd_ms"] = 1e3 * statistics.median(row["fwd_times"])
        row["train_ms"] = 1e3 * statistics.median(row["train_times"])
    by_name = {r["block"]: r for r in rows if "error" not in r}
    base = by_name.get("conv")
    for r in by_name.values():
        if base is not None:
            r["fwd_x_conv"] = r["fwd_ms"] / base["fwd_ms"]
            r["train_x_conv"] = r["train_ms"] / base["train_ms"]
        peer = by_name.get(r["peer"]) if r["peer"] else None
        if peer is not None:
            r["train_x_peer"] = r["train_ms"] / peer["train_ms"]
            r["fwd_x_peer"] = r["fwd_ms"] / peer["fwd_ms"]
    return rows


def format_table(rows: list[dict]) -> str:
    head = (
        f"{'shape':>14} {'block':<24} {'params':>9} {'GFLOPs':>7} {'saved MB':>8} {'peak MB':>8} "
        f"{'fwd ms':>8} {'x conv':>7} {'f+b ms':>9} {'x conv':>7} {'peer':<24} {'x peer':>7}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        shape = "x".join(map(str, r["shape"]))
        if "error" in r:
            lines.append(f"{shape:>14} {r['block']:<24} cannot run: {r['error']}")
            continue
        peer = r["peer"] or ""
        xp = f"{r['train_x_peer']:.2f}" if "train_x_peer" in r else ""
        lines.append(
            f"{shape:>14} {r['block']:<24} {r['params']:>9} {r['gflops']:>7.2f} {r['saved_mb']:>8.1f} "
            f"{r['peak_mb']:>8.1f} {r['fwd_ms']:>8.1f} {r.get('fwd_x_conv', float('nan')):>7.2f} {r['train_ms']:>9.1f} "
            f"{r.get('train_x_conv', float('nan')):>7.2f} {peer:<24} {xp:>7}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.blocks = args.blocks or list(CANDIDATES)
    kept = keep_freed_memory() if args.malloc == "keep" else False
    try:
        shapes = [parse_shape(s) for s in (args.shapes or (QUICK_SHAPES if args.quick else DEFAULT_SHAPES))]
        unknown = [b for b in args.blocks if b not in CANDIDATES]
        if unknown:
            raise ValueError(f"unknown candidate(s) {unknown}; choose from {', '.join(CANDIDATES)}")
        device = torch.device(args.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError("--device cuda given but no CUDA device is available; use --device cpu")
    except ValueError as exc:
        print(f"bench_blocks: {exc}", file=sys.stderr)
        return 2
    names = ["conv"] + [b for b in args.blocks if b != "conv"]
    reps = args.reps or (3 if args.quick else 7)
    rows = []
    for shape in shapes:
        rows += bench_shape(shape, names, device, reps, args.warmup, args.channels_last, args.compile, args.amp)
        print(format_table([r for r in rows if r["shape"] == list(shape)]), flush=True)
        print()
    report = {
        "command": " ".join(["python", "tools/bench_blocks.py", *(argv or sys.argv[1:])]),
        "machine": machine_info(device),
        "reps": reps,
        "options": {
            "channels_last": args.channels_last,
            "compile": args.compile,
            "amp": args.amp,
            "malloc": "keep" if kept else "system",
        },
        "results": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
