"""Comparisons of block variants: seeds, final-epoch COCO stats, paired bootstrap intervals, costs, report."""

from .bootstrap import ImageResampler, paired_bootstrap
from .comparison import ComparisonResult, run_comparison
from .cost import model_costs
from .runs import RunRecord, execute, run_state
from .spec import ComparisonSpec, PlannedRun, from_configs, is_comparison, load_spec, plan_runs, select_variants

__all__ = [
    "ComparisonResult",
    "ComparisonSpec",
    "ImageResampler",
    "PlannedRun",
    "RunRecord",
    "execute",
    "from_configs",
    "is_comparison",
    "load_spec",
    "model_costs",
    "paired_bootstrap",
    "plan_runs",
    "run_comparison",
    "run_state",
    "select_variants",
]
