"""convblocks: a registry of drop-in replacements for ``nn.Conv2d`` and PyConv head blocks."""

from .conv import conv2d, same_padding
from .coordconv import CoordConv2d, coordinate_channels
from .deform import DeformConv2d, ModulatedDeformConv2d
from .dynamic import DynamicConv2d, set_temperature, temperature_schedule
from .kernels import deform_conv2d, dynamic_conv2d, pyconv2d
from .param_groups import lr_multipliers, param_groups
from .pyconv import PyConv2d
from .pyconv_head import PyConvGlobalHead, PyConvHead, PyConvLocalHead
from .registry import BLOCKS, BlockConfigError, Registry, build_block, list_blocks, register_block

__all__ = [
    "BLOCKS",
    "BlockConfigError",
    "CoordConv2d",
    "DeformConv2d",
    "DynamicConv2d",
    "ModulatedDeformConv2d",
    "PyConv2d",
    "PyConvGlobalHead",
    "PyConvHead",
    "PyConvLocalHead",
    "Registry",
    "build_block",
    "conv2d",
    "coordinate_channels",
    "deform_conv2d",
    "dynamic_conv2d",
    "list_blocks",
    "lr_multipliers",
    "param_groups",
    "pyconv2d",
    "register_block",
    "same_padding",
    "set_temperature",
    "temperature_schedule",
]
