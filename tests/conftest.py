"""Test-wide settings: never touch the network, and keep CPU threads predictable on 2-core machines."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TIMM_FUSED_ATTN", "0")
