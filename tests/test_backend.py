"""One backend per op for the whole process (convblocks/kernels/backends.py), and blocks that no longer take one."""

import pytest
import torch

from convblocks import BlockConfigError, build_block, dynamic_conv2d
from convblocks.kernels import BACKENDS, backend, backends, dynamic_conv, set_backend, use_backend


def test_use_backend_sets_and_restores_and_the_op_follows(monkeypatch):
    seen = []
    real = dynamic_conv._unfold
    monkeypatch.setattr(dynamic_conv, "_unfold", lambda *a: seen.append("unfold") or real(*a))
    x, pi, bank = torch.randn(2, 4, 5, 5), torch.softmax(torch.randn(2, 3), 1), torch.randn(3, 6, 4, 3, 3)
    assert backend("dynamic_conv2d") == "auto"
    with use_backend(dynamic_conv2d="unfold"):
        assert backend("dynamic_conv2d") == "unfold"
        ours = dynamic_conv2d(x, pi, bank, None, 1, 1)
    assert backend("dynamic_conv2d") == "auto" and seen == ["unfold"]
    with use_backend(dynamic_conv2d="mixture"):
        torch.testing.assert_close(dynamic_conv2d(x, pi, bank, None, 1, 1), ours, rtol=1e-5, atol=1e-5)


def test_unknown_ops_and_backends_are_refused():
    with pytest.raises(ValueError, match="unknown op 'conv2d'"):
        set_backend("conv2d", "auto")
    with pytest.raises(ValueError, match="deform_conv2d backend must be one of auto, fused, native"):
        set_backend("deform_conv2d", "cuda")
    assert all(names[0] == "auto" for names in BACKENDS.values())


@pytest.mark.parametrize("name,key", [("dynamic", "impl"), ("dcnv2", "impl"), ("pyconv", "layout")])
def test_a_recipe_naming_impl_or_layout_is_one_line_saying_what_replaced_it(name, key):
    with pytest.raises(BlockConfigError, match=f"block '{name}' takes no '{key}': .*set_backend.*CONVZOO_BACKEND"):
        build_block({"type": name, "in_channels": 8, "out_channels": 8, key: "auto"})


def test_environment_names_backends_and_a_bad_one_is_an_error(monkeypatch):
    """``CONVZOO_BACKEND`` as read at import (``_from_environment``)."""
    with use_backend():
        monkeypatch.setenv("CONVZOO_BACKEND", "deform_conv2d=native, pyconv2d=direct")
        backends._from_environment()
        assert (backend("deform_conv2d"), backend("pyconv2d"), backend("dynamic_conv2d")) == (
            "native",
            "direct",
            "auto",
        )
        monkeypatch.setenv("CONVZOO_BACKEND", "x=y")
        with pytest.raises(ValueError, match="CONVZOO_BACKEND='x=y': unknown op 'x'"):
            backends._from_environment()
    assert backend("deform_conv2d") == "auto"
