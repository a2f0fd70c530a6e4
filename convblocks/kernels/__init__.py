"""Everything in convblocks that exists for speed, behind functional ops with torchvision-style signatures.

``deform_conv2d``, ``dynamic_conv2d`` and ``pyconv2d`` each have a pure-PyTorch reference and faster
formulations with equal results; ``backend`` chooses among them once per process. Below them: the compiled
CPU kernels (``csrc/``, built on first use by ``cpu_ext``), their ``torch.library`` plumbing (``kernel_op``),
layout changes, im2col, kernel mixing and the grouped and deformable kernels.
"""

from .backends import BACKENDS, backend, set_backend, use_backend
from .deform_ops import deform_conv2d
from .dynamic_conv import dynamic_conv2d
from .pyconv_ops import pyconv2d

__all__ = ["BACKENDS", "backend", "deform_conv2d", "dynamic_conv2d", "pyconv2d", "set_backend", "use_backend"]
