"""The EMA paper repository's configurations (models/hub/ema-paper/, models/paper_blocks.py): parameter counts,
state_dict layout and outputs of that repository's own code, how its YAMLs are recognised, its checkpoints, ONNX."""

from __future__ import annotations

import json
from copy import deepcopy
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from models import paper_blocks as pb
from models.yolo import PAPER_BLOCK_SET, YOLOV5_BLOCKS, Model, ModelYAMLError, block_set_of, resolve_cfg
from tests.fingerprint import fill_deterministic_, fingerprint, keys_digest, probe_input
from tests.helpers import onnx_relative_error

PAPER = Path(__file__).resolve().parents[1] / "models" / "hub" / "ema-paper"
REFERENCE = json.loads((Path(__file__).resolve().parent / "data" / "ema_paper_reference.json").read_text())
# That repository names CBAM's spatial convolution `conv1` where ours is `conv` (see the issue 13 report)
CBAM_NAMES: dict[str, str] = {}  # CBAM uses that code's attribute names (spatial_attention.conv1)
SMALL = {"depth_multiple": 0.33, "width_multiple": 0.25}  # the head's widths; backbone blocks keep their own


def load_cfg(name: str, **override) -> dict:
    d = yaml.safe_load((PAPER / f"{name}.yaml").read_text())
    d.update(override)
    return d


def as_written_there(name: str) -> dict:
    """The YAML as that repository has it: ours without the 'blocks' key."""
    d = load_cfg(name)
    del d["blocks"]
    return d


def test_every_buildable_configuration_is_shipped():
    assert {p.stem for p in PAPER.glob("*.yaml")} == set(REFERENCE["models"])
    assert set(REFERENCE["errors"]) == {"yolov5xP2SSA"}  # its own code cannot build that one either


@pytest.mark.parametrize("name", list(REFERENCE["models"]))
def test_parameters_layout_and_strides_equal_that_code(name):
    ref = REFERENCE["models"][name]
    m = Model(resolve_cfg(name), verbose=False)
    assert sum(p.numel() for p in m.parameters()) == ref["params"]
    assert keys_digest(m.state_dict(), CBAM_NAMES) == ref["state_dict"]
    assert m.stride.tolist() == ref["stride"]


@pytest.mark.parametrize("key", list(REFERENCE["outputs"]))
def test_outputs_equal_that_code(key):
    ref = REFERENCE["outputs"][key]
    m = Model(load_cfg(ref["cfg"], **ref["override"]), verbose=False)
    if "params" in ref:  # a scaled-down variant
        assert sum(p.numel() for p in m.parameters()) == ref["params"]
        assert keys_digest(m.state_dict(), CBAM_NAMES) == ref["state_dict"]
    fill_deterministic_(m, CBAM_NAMES).eval()
    with torch.no_grad():
        ours = fingerprint(m(probe_input(*ref["imgsz"]))[1])
    assert [level[0] for level in ours] == [level[0] for level in ref["levels"]]
    for o, r in zip(ours, ref["levels"]):
        assert np.allclose([o[1], o[2], *o[3]], [r[1], r[2], *r[3]], rtol=1e-4, atol=1e-5), (key, o, r)


@pytest.mark.parametrize("name", list(REFERENCE["models"]))
def test_yaml_as_written_there_is_recognised(name):
    """Without our 'blocks' key: a block or argument form only that code has selects its blocks. The P2 models with
    attention use YOLOv5's blocks only, which build the same model; the TPH model's C3TR is also a YOLOv5 name, so
    that YAML needs the key (or a checkpoint's weights decide, see test_checkpoint_picks_the_blocks_its_weights_fit)."""
    d = as_written_there(name)
    ambiguous = name == "yolov5xP2CBAM-TPH-BiFPN-SPP"
    plain = name in ("yolov5xP2", "yolov5xP2CA", "yolov5xP2CBAM", "yolov5xP2EMA")
    assert block_set_of(d) is (YOLOV5_BLOCKS if plain or ambiguous else PAPER_BLOCK_SET)
    if not ambiguous and REFERENCE["models"][name]["params"] < 30e6:
        assert sum(p.numel() for p in Model(d, verbose=False).parameters()) == REFERENCE["models"][name]["params"]


def test_blocks_key_errors_and_unknown_modules(tmp_path):
    d = load_cfg("yolov5xP2EMA", blocks="nonsense")
    with pytest.raises(ModelYAMLError, match="'blocks: nonsense' is not one of yolov5, EMA-attention-module"):
        Model(d, verbose=False)
    ssa = as_written_there("yolov5xP2EMA")  # the repository's yolov5xP2SSA.yaml: SSA instead of EMA
    ssa["head"] = [[f, n, "SSA" if m == "EMA" else m, a] for f, n, m, a in ssa["head"]]
    with pytest.raises(ModelYAMLError, match=r"layer 14 .*unknown module 'SSA'; known modules: .*CA"):
        Model(ssa, verbose=False)
    ghost = as_written_there("yolov5lGhost")
    ghost["blocks"] = "yolov5"  # forcing YOLOv5's GhostBottleneck on that YAML: one error with the hint
    with pytest.raises(ModelYAMLError, match=r"layer 1 .*GhostBottleneck"):
        Model(ghost, verbose=False)


def test_pruned_widths_follow_the_channel_factors():
    m = Model(load_cfg("yolov5s-0.6-pruned"), verbose=False)
    conv0, c3 = m.model[0], m.model[2]
    assert conv0.conv.out_channels == 24  # 64 x 0.65625 x 0.5 = 21 -> next multiple of 8
    assert isinstance(c3, pb.PrunableC3)
    assert (c3.cv1.conv.out_channels, c3.cv2.conv.out_channels) == (32, 30)  # unpruned width 64 x (0.5, 0.46875)
    assert c3.cv3.conv.out_channels == 48 and c3.m[0].cv1.conv.out_channels == 17  # 32 x 0.53125
    assert m.model[9].cv1.conv.out_channels == int(m.model[8].cv3.conv.out_channels * 0.259765625)  # SPPF e


def test_checkpoint_picks_the_blocks_its_weights_fit(tmp_path):
    """A checkpoint of that code pickles a yaml without 'blocks'; its C3TR weights (TPH layers) decide the blocks."""
    from utils.checkpoint import load_checkpoint

    cfg = load_cfg("yolov5xP2CBAM-TPH-BiFPN-SPP", depth_multiple=0.33, width_multiple=0.25)
    src = fill_deterministic_(Model(cfg, verbose=False)).eval()
    src.yaml.pop("blocks")
    torch.save({"model": src, "epoch": 3}, tmp_path / "tph.pt")
    loaded = load_checkpoint(tmp_path / "tph.pt")["model"]
    assert loaded.yaml["blocks"] == "EMA-attention-module" and isinstance(loaded.model[8], pb.C3TPH)
    x = probe_input(128, 160)
    with torch.no_grad():
        assert torch.allclose(loaded(x)[0], src(x)[0], atol=1e-5)


def test_cbam_weights_of_that_code_load_strictly():
    m = Model(load_cfg("yolov5xP2CBAM", depth_multiple=0.33, width_multiple=0.25), verbose=False)
    sd = m.state_dict()
    assert any(k.endswith("spatial_attention.conv1.weight") for k in sd)  # that code's name
    m.load_state_dict(sd, strict=True)
    older = {k.replace("spatial_attention.conv1.", "spatial_attention.conv."): v for k, v in sd.items()}
    m.load_state_dict(older, strict=True)  # this project's checkpoints from before the rename


# ----------------------------------------------------------------------------------------------------
# Blocks
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("hw", [(8, 8), (13, 21), (5, 3)])
def test_swin_layer_pads_to_windows_and_crops_back(hw):
    torch.manual_seed(0)
    block = pb.SwinTransformerBlock(32, 32, num_heads=1, num_layers=2).eval()
    x = torch.randn(2, 32, *hw)
    with torch.no_grad():
        y = block(x)
    assert y.shape == x.shape and torch.isfinite(y).all()
    if hw == (8, 8):  # one window: the shifted layer masks the rolled regions from each other
        layer = block.blocks[1]
        assert layer.shift_size == 4
        mask = layer._shift_mask(8, 8, x)
        assert mask.shape == (1, 64, 64) and set(mask.unique().tolist()) == {-100.0, 0.0}


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_transformer_blocks_in_half_precision(dtype):
    torch.manual_seed(0)
    x = torch.randn(1, 64, 13, 10)
    for block in (pb.SwinTransformerBlock(64, 64, num_heads=2, num_layers=2), pb.C3TPH(64, 64, n=2)):
        block.eval()
        with torch.no_grad():
            ref = block(x)
            y = deepcopy(block).to(dtype)(x.to(dtype))
            with torch.autocast("cpu", dtype=torch.bfloat16):
                z = block(x)
        assert y.dtype == dtype and (y.float() - ref).abs().max() < 0.1 * ref.abs().max()
        assert (z.float() - ref).abs().max() < 0.1 * ref.abs().max()


def test_light_blocks_shapes_and_errors():
    x = torch.rand(2, 16, 12, 10)
    assert pb.MobileNetV3_InvertedResidual(16, 24, 72, 5, 2, True, True)(x).shape == (2, 24, 6, 5)
    assert pb.ShuffleNetV2_InvertedResidual(16, 32, 2)(x).shape == (2, 32, 6, 5)
    assert pb.ShuffleNetV2_InvertedResidual(16, 16, 1)(x).shape == x.shape
    assert pb.MBConvBlock(16, 16, 3, 1, 6, 0.1, True)(x).shape == x.shape
    assert pb.DepthSepConv(16, 32, 5, 2, True)(x).shape == (2, 32, 6, 5)
    assert pb.GhostNetBottleneck(16, 24, 48, 3, 2, True)(x).shape == (2, 24, 6, 5)
    with pytest.raises(ValueError, match="input \\(16\\) and output \\(32\\) channels must be equal"):
        pb.ShuffleNetV2_InvertedResidual(16, 32, 1)
    with pytest.raises(ValueError, match="no attention head"):
        pb.C3STR(64, 32)


@pytest.mark.parametrize("name, override, hw", [
    ("yolov5xP2CBAM-Swin-BiFPN-SPP", {"depth_multiple": 0.67, "width_multiple": 0.25}, (128, 160)),  # C3STR
    ("yolov5xP2CBAM-TPH-BiFPN-SPP", {"depth_multiple": 0.67, "width_multiple": 0.25}, (128, 160)),  # TPH C3TR
    ("yolov5lGhost", SMALL, (64, 96)),  # GhostNet blocks, SeBlock
    ("yolov5lMobilenetv3Small", SMALL, (64, 96)),
    ("yolov5lShffule", SMALL, (64, 96)),
    ("yolov5lEfficientLite", SMALL, (64, 96)),  # stem, MBConvBlock
    ("yolov5lPP-LC", SMALL, (64, 96)),  # DepthSepConv
    ("yolov5s-0.6-pruned", {}, (96, 128)),  # prunable C3, SPPF e
])
def test_onnx_export_matches_pytorch(tmp_path, name, override, hw):
    model = fill_deterministic_(Model(load_cfg(name, **override), verbose=False)).eval()
    assert onnx_relative_error(model, tmp_path / f"{name}.pt", hw) < 1e-4
