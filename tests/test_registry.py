"""The block registry: registration, lookup errors, argument checks and third-party discovery."""

import sys
import textwrap

import pytest
import torch
import torch.nn as nn

import convblocks
from convblocks import BlockConfigError, Registry, build_block, list_blocks, register_block

BUILTIN = {
    "conv",
    "coordconv",
    "deform",
    "dcnv2",
    "dynamic",
    "pyconv",
    "pyconv_local_head",
    "pyconv_global_head",
    "pyconv_head",
}


def test_builtin_blocks_listed_with_descriptions():
    blocks = list_blocks()
    assert set(blocks) >= BUILTIN
    assert all(isinstance(d, str) and d for d in blocks.values())
    assert set(list_blocks(kind="head")) == {"pyconv_local_head", "pyconv_global_head", "pyconv_head"}


def test_conv_is_plain_conv2d_with_same_padding():
    m = build_block("conv", in_channels=4, out_channels=6, kernel_size=5, dilation=2)
    assert type(m) is nn.Conv2d and m.padding == (4, 4)
    assert build_block({"type": "conv", "in_channels": 4, "out_channels": 6}).kernel_size == (3, 3)


def test_unknown_block_suggests_close_match():
    with pytest.raises(BlockConfigError, match=r"unknown block 'cordconv'; did you mean 'coordconv'\?"):
        build_block({"type": "cordconv", "in_channels": 4, "out_channels": 4})


def test_unknown_argument_names_block_and_argument():
    with pytest.raises(
        BlockConfigError, match=r"block 'coordconv' got an unknown argument 'with_rr'; did you mean 'with_r'"
    ):
        build_block("coordconv", in_channels=4, out_channels=4, with_rr=True)


def test_missing_argument_and_missing_type():
    with pytest.raises(BlockConfigError, match="missing required argument.*out_channels"):
        build_block("dynamic", in_channels=4)
    with pytest.raises(BlockConfigError, match="no 'type' key"):
        build_block({"in_channels": 4})


def test_impossible_groups_is_one_line_error_naming_block():
    with pytest.raises(BlockConfigError) as err:
        build_block("dcnv2", in_channels=6, out_channels=8, groups=4)
    msg = str(err.value)
    assert msg.startswith("block 'dcnv2': ") and "groups=4" in msg and "\n" not in msg


def test_register_decorator_and_force():
    reg = Registry("block")

    @reg.register("mine")
    class Mine(nn.Conv2d):
        """My conv."""

    assert reg.describe() == {"mine": "My conv."}
    with pytest.raises(BlockConfigError, match="already registered"):
        reg.register("mine")(nn.Identity)
    reg.register("mine", force=True)(nn.Identity)
    assert isinstance(reg.build("mine"), nn.Identity)


def test_user_block_via_decorator_builds_from_config():
    @register_block("test_scaled_conv", force=True)
    class ScaledConv(nn.Conv2d):
        """Conv times a constant."""

        def __init__(self, in_channels, out_channels, kernel_size=3, scale=2.0, **kw):
            super().__init__(in_channels, out_channels, kernel_size, padding=kernel_size // 2, **kw)
            self.scale = scale

    try:
        m = build_block({"type": "test_scaled_conv", "in_channels": 2, "out_channels": 3, "scale": 0.5})
        assert isinstance(m, ScaledConv) and m.scale == 0.5
        assert "test_scaled_conv" in list_blocks()
    finally:
        convblocks.BLOCKS._entries.pop("test_scaled_conv")


@pytest.fixture
def plugin_pkg(tmp_path, monkeypatch):
    """A fake installed distribution that advertises a block through the 'convblocks' entry-point group."""
    pkg = tmp_path / "zoo_plugin"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(
        textwrap.dedent('''
        import torch.nn as nn

        class TripleConv(nn.Conv2d):
            """A plug-in conv from another package."""

            def __init__(self, in_channels, out_channels, kernel_size=3, **kw):
                super().__init__(in_channels, out_channels, kernel_size, padding=kernel_size // 2, **kw)
    ''')
    )
    dist = tmp_path / "zoo_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: zoo-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[convblocks]\ntriple_conv = zoo_plugin:TripleConv\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    reg = Registry("block", entry_point_group="convblocks")
    yield reg
    sys.modules.pop("zoo_plugin", None)


def test_entry_point_blocks_load_lazily(plugin_pkg):
    assert "zoo_plugin" not in sys.modules  # nothing imported until a name is missed
    m = plugin_pkg.build("triple_conv", in_channels=3, out_channels=5)
    assert type(m).__name__ == "TripleConv" and "zoo_plugin" in sys.modules
    assert m(torch.zeros(1, 3, 8, 8)).shape == (1, 5, 8, 8)


def test_import_path_block(plugin_pkg):
    m = build_block({"type": "zoo_plugin:TripleConv", "in_channels": 2, "out_channels": 2})
    assert type(m).__name__ == "TripleConv"
    with pytest.raises(BlockConfigError, match="has no attribute 'Nope'"):
        build_block({"type": "zoo_plugin:Nope"})
    with pytest.raises(BlockConfigError, match="cannot import module 'no_such_mod_xyz'"):
        build_block({"type": "no_such_mod_xyz:Conv"})
