"""The one place where messages the user cannot act on are filtered: Lightning's tips and warnings of this
lightning/torch pairing that say nothing about the user's run. Progress lines and real warnings stay."""

from __future__ import annotations

import logging
import warnings

WARNINGS = (
    ".*treespec, LeafSpec.*",
    ".*is smaller than the logging interval.*",
    "Checkpoint directory .* exists and is not empty",  # a resume writes into its own run; a new run is refused
)
LOG_PREFIXES = (
    "💡 Tip:",  # advertising for Lightning's cloud products
    "Loading `train_dataloader` to estimate",  # an internal step of Lightning's, with nothing to do about it
)


class _DropNoise(logging.Filter):
    """Drops log records whose message starts with one of ``LOG_PREFIXES``."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(LOG_PREFIXES)


def silence_noise() -> None:
    """Install the filters (idempotent): Python warnings by message, Lightning's console handlers by prefix."""
    for pattern in WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        for handler in logging.getLogger(name).handlers:
            if not any(isinstance(f, _DropNoise) for f in handler.filters):
                handler.addFilter(_DropNoise())
