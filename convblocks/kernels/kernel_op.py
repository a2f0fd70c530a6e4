"""A compiled CPU kernel as a ``torch.library`` custom op, with a cheap eager path.

The custom op is what ``torch.compile``, ``torch.export``, FakeTensor, ``opcheck`` and ``FlopCounterMode`` see.
In eager mode, though, a call of a custom op with an autograd formula goes through several layers of Python
dispatch, several times the overhead of the same kernel in an ``autograd.Function``: that counts at batch 1,
where a dynamic conv step makes four such calls.
``KernelOp`` registers the op, and in eager mode with no dispatch mode active calls the kernel directly,
through an ``autograd.Function`` built from the same ``setup_context`` and ``backward`` where a gradient is
needed: one kernel and one gradient formula, two ways in.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.utils._python_dispatch import _get_current_dispatch_mode


class KernelOp:
    """``convzoo::<name>`` from ``kernel`` (its type hints give the schema), ``fake`` (shapes for tracing) and
    optionally ``backward``/``setup_context`` (as for ``register_autograd``). ``list_input``: the first argument
    is a list of tensors (passed to the eager ``autograd.Function`` one by one, so that autograd tracks them);
    ``list_output``: the kernel returns a list of tensors (a tuple on the eager path)."""

    def __init__(
        self,
        name: str,
        kernel: Callable,
        fake: Callable,
        backward: Callable | None = None,
        setup_context: Callable | None = None,
        list_input: bool = False,
        list_output: bool = False,
    ) -> None:
        self.kernel, self.list_input = kernel, list_input
        self.op = torch.library.custom_op(f"convzoo::{name}", kernel, mutates_args=())
        self.op.register_fake(fake)
        self.function = None
        if backward is not None:
            self.op.register_autograd(backward, setup_context=setup_context)
            self.function = _eager_function(name, kernel, backward, setup_context, list_input, list_output)

    def __call__(self, *args: Any) -> Any:
        if torch.compiler.is_compiling() or _get_current_dispatch_mode() is not None:
            return self.op(*args)
        if torch.is_grad_enabled() and _requires_grad(args, self.list_input):
            if self.function is None:  # no gradient formula: the op, whose backward says so, not a silent detach
                return self.op(*args)
            if self.list_input:
                return self.function.apply(len(args[0]), *args[0], *args[1:])
            return self.function.apply(*args)
        return self.kernel(*args)


def _requires_grad(args: tuple, list_input: bool) -> bool:
    tensors = list(args[0]) + list(args[1:]) if list_input else args
    return any(isinstance(t, torch.Tensor) and t.requires_grad for t in tensors)


def _eager_function(
    name: str, kernel: Callable, backward: Callable, setup_context: Callable, list_input: bool, list_output: bool
) -> type[torch.autograd.Function]:
    """An ``autograd.Function`` running ``kernel`` with the op's ``setup_context`` and ``backward``."""

    def pack(args: tuple) -> tuple:  # the Function's arguments -> the kernel's
        return (list(args[1 : 1 + args[0]]), *args[1 + args[0] :]) if list_input else args

    def forward(ctx, *args):  # ctx first: Function.apply binds arguments by signature (slow) with setup_context
        inputs = pack(args)
        out = kernel(*inputs)
        if setup_context is not None:
            setup_context(ctx, inputs, out)
        return tuple(out) if list_output else out

    def backward_(ctx, *grads):
        result = backward(ctx, list(grads) if list_output else grads[0])
        if list_input:  # the list's gradients (a list: alone, or first of a tuple); none for the count
            parts, rest = (result, ()) if isinstance(result, list) else (result[0], result[1:])
            return (None, *parts, *rest)
        return result if isinstance(result, tuple) else (result,)

    namespace = {
        "forward": staticmethod(forward),
        "backward": staticmethod(backward_),
    }
    return type(f"{name}_eager", (torch.autograd.Function,), namespace)
