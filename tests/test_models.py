"""Model zoo: exact Table 2 parameter counts, GFLOPs, strides/anchors, Detect decoding, fuse, tracing, YAML errors."""

import logging
import re
from copy import deepcopy
from pathlib import Path

import pytest
import torch
import yaml

from bench.paper import PAPER  # the paper's Table 2 (params in M, GFLOPs, mAP)
from models.attention import CA, CBAM, EMA, SA
from models.common import Conv
from models.yolo import Model, ModelYAMLError, count_flops, main

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "models"

# Counted by building the original authors' configurations with the original YOLOv5 code (as built, before fusing);
# SA/ECA: baseline + their few parameters.
EXACT_PARAMS = {
    "yolov5s": 7_235_389,
    "yolov5s-ema": 7_238_685,
    "yolov5s-ca": 7_267_717,
    "yolov5s-cbam": 7_276_545,
    "yolov5s-sa": 7_235_389 + 6 * 256 // 128 + 6 * 512 // 128,
    "yolov5s-eca": 7_235_389 + 5 + 5,
    "yolov5x-p2": 90_963_540,
    "yolov5x-p2-ema": 91_179_620,
    "yolov5x-p2-ca": 91_278_630,
    "yolov5x-p2-cbam": 91_309_630,
}
ALL_YAMLS = sorted(p.stem for p in MODELS.glob("yolo*.yaml"))

_cache: dict = {}


def build(name: str) -> Model:
    if name not in _cache:
        torch.manual_seed(0)
        _cache[name] = Model(MODELS / f"{name}.yaml", verbose=False)
    return _cache[name]


def n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("name", list(EXACT_PARAMS))
def test_exact_parameter_count(name):
    n = n_params(build(name))
    assert n == EXACT_PARAMS[name]
    assert abs(n / 1e6 - PAPER[name].params_m) <= 0.01 + 1e-9


@pytest.mark.parametrize("name", list(PAPER))
def test_gflops_within_1p5_percent_of_paper(name):
    ours = count_flops(build(name), 640)
    paper = PAPER[name].gflops
    assert paper <= ours <= paper * 1.015, f"{name}: {ours:.2f} GFLOPs vs paper {paper}"


@pytest.mark.parametrize("name", ALL_YAMLS)
def test_strides_and_anchor_order(name):
    m = build(name)
    det = m.model[-1]
    expected = [4.0, 8.0, 16.0, 32.0] if "p2" in name else [8.0, 16.0, 32.0]
    assert det.stride.tolist() == expected and m.stride.tolist() == expected
    areas = (det.anchors * det.stride.view(-1, 1, 1)).prod(-1).mean(-1)
    assert (areas.diff() > 0).all(), "anchor area must grow with stride"
    cfg = yaml.safe_load((MODELS / f"{name}.yaml").read_text())
    px = torch.tensor(cfg["anchors"], dtype=torch.float32).view(det.nl, -1, 2)
    assert torch.allclose(det.anchors * det.stride.view(-1, 1, 1), px)


def test_reversed_anchors_are_flipped():
    cfg = yaml.safe_load((MODELS / "yolov5s.yaml").read_text())
    cfg["anchors"] = cfg["anchors"][::-1]
    det = Model(cfg, verbose=False).model[-1]
    assert (det.anchors * det.stride.view(-1, 1, 1))[0, 0].tolist() == [10.0, 13.0]


def test_attention_placement_yolov5s():
    m = build("yolov5s-ema")
    assert isinstance(m.model[7], EMA) and isinstance(m.model[10], EMA)
    assert m.model[14].f == [-1, 7] and m.model[18].f == [-1, 4]
    assert m.model[21].f == [-1, 16] and m.model[24].f == [-1, 12]
    assert m.model[-1].f == [19, 22, 25]
    assert m.model[7].gn.num_channels == 8 and m.model[10].gn.num_channels == 16  # 256 and 512 channels / 32


def test_attention_placement_yolov5x_p2():
    m = build("yolov5x-p2-cbam")
    att = [i for i, layer in enumerate(m.model) if isinstance(layer, CBAM)]
    assert att == [14, 19, 24, 28, 32]
    assert m.model[26].f == [-1, 18] and m.model[30].f == [-1, 14] and m.model[34].f == [-1, 10]
    assert m.model[-1].f == [23, 27, 31, 35]


@pytest.mark.parametrize("module, option", [("EMA", 32), ("CA", 32), ("CBAM", 16), ("SA", 64)])
def test_fork_style_channel_argument_builds_same_model(module, option):
    """`[-1, 1, EMA, [512]]` (the forks' channel count, before width scaling) == `[]` == `[256]` (scaled)."""
    base = yaml.safe_load((MODELS / f"yolov5s-{module.lower()}.yaml").read_text())
    variants = []
    for p4, p5 in ([], []), ([512], [1024]), ([256], [512]), ([512, option], [1024, option]):
        cfg = deepcopy(base)
        cfg["backbone"][7][3], cfg["backbone"][10][3] = p4, p5
        torch.manual_seed(0)
        variants.append(Model(cfg, verbose=False))
    ref = variants[0].state_dict()
    for v in variants[1:]:
        sd = v.state_dict()
        assert sd.keys() == ref.keys() and all(torch.equal(sd[k], ref[k]) for k in ref)


def test_attention_options_from_yaml():
    cfg = yaml.safe_load((MODELS / "yolov5s-ema.yaml").read_text())
    cfg["backbone"][7][3] = [16]  # factor 16 at P4
    m = Model(cfg, verbose=False)
    assert m.model[7].groups == 16 and m.model[10].groups == 32


def test_detect_inference_format_and_decoding():
    torch.manual_seed(0)
    m = Model(MODELS / "yolov5n.yaml", nc=3, verbose=False).eval()
    x = torch.rand(2, 3, 96, 128)
    with torch.no_grad():
        y, raw = m(x)
    det = m.model[-1]
    n_anchors = sum(3 * (96 // s) * (128 // s) for s in (8, 16, 32))
    assert y.shape == (2, 4 + 3, n_anchors)
    assert [r.shape for r in raw] == [(2, 3, 96 // s, 128 // s, 8) for s in (8, 16, 32)]
    # re-decode level 1, anchor 2, cell (row 3, col 5) by hand
    lvl, a, row, col = 1, 2, 3, 5
    p = raw[lvl][0, a, row, col].sigmoid()
    s = det.stride[lvl]
    anchor_px = det.anchors[lvl, a] * s
    xy = (p[:2] * 2 - 0.5 + torch.tensor([col, row])) * s
    wh = (p[2:4] * 2) ** 2 * anchor_px
    offset = 3 * 12 * 16 + (a * (96 // 16) + row) * (128 // 16) + col
    assert torch.allclose(y[0, :2, offset], xy, atol=1e-4)
    assert torch.allclose(y[0, 2:4, offset], wh, atol=1e-4)
    assert torch.allclose(y[0, 4:, offset], p[5:] * p[4], atol=1e-6)


def test_training_mode_returns_raw_maps_and_build_leaves_bn_untouched():
    m = Model(MODELS / "yolov5n.yaml", verbose=False)
    bn = m.model[0].bn
    assert torch.all(bn.running_mean == 0) and torch.all(bn.running_var == 1), "stride probe must not update BN"
    assert bn.eps == 1e-3 and bn.momentum == 0.03
    out = m.train()(torch.rand(1, 3, 64, 64))
    assert isinstance(out, list) and out[0].shape == (1, 3, 8, 8, 85)


def test_bias_initialisation():
    m = build("yolov5s")
    det = m.model[-1]
    import math

    for conv, s in zip(det.m, det.stride):
        b = conv.bias.view(det.na, -1)
        default = b[:, 5:]  # class biases start at log(0.6 / (nc - 0.99)) plus the conv's small random init
        assert torch.allclose(b[:, 4].mean(), torch.tensor(math.log(8 / (640 / s) ** 2)), atol=0.1)
        assert torch.allclose(default.mean(), torch.tensor(math.log(0.6 / (80 - 0.99))), atol=0.1)


@pytest.mark.parametrize("name", ["yolov5s", "yolov5s-ema", "yolov5s-ca", "yolov5s-cbam", "yolov5s-sa", "yolov5s-eca",
                                  "yolov5x-p2-ema"])
def test_fuse_keeps_outputs(name):
    m = deepcopy(build(name)).eval()
    with torch.no_grad():  # give BN non-trivial statistics so fusing has something to fold
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.1, 0.1)
                mod.running_var.uniform_(0.5, 1.5)
    x = torch.rand(1, 3, 128, 96)
    with torch.no_grad():
        before = m(x)[0]
        m.fuse(verbose=False)
        after = m(x)[0]
    assert m.is_fused() and not any(isinstance(x, Conv) and hasattr(x, "bn") for x in m.modules())
    assert (before - after).abs().max() < 1e-4 * max(1.0, before.abs().max().item() / 100)


@pytest.mark.parametrize("name", list(PAPER))
def test_torchscript_trace_runs(name):
    m = deepcopy(build(name)).eval().fuse(verbose=False)
    x = torch.rand(1, 3, 128, 128)
    with torch.no_grad():
        traced = torch.jit.trace(m, x, strict=False)
        y_t, y = traced(x)[0], m(x)[0]
    assert y_t.shape == y.shape and torch.allclose(y_t, y, atol=1e-4)


def test_augmented_inference():
    torch.manual_seed(0)
    m = Model(MODELS / "yolov5n.yaml", nc=2, verbose=False).eval()
    x = torch.rand(1, 3, 128, 128)
    with torch.no_grad():
        y, _ = m(x, augment=True)
        plain = m(x)[0]
    assert y.shape[:2] == (1, 6) and y.shape[2] > plain.shape[2]  # three passes minus the clipped levels
    n_full = plain.shape[2]
    n_coarsest = 3 * (128 // 32) ** 2
    assert torch.allclose(y[:, :, : n_full - n_coarsest], plain[:, :, : n_full - n_coarsest])  # scale 1 comes first
    assert (y[:, :2] > -64).all() and (y[:, :2] < 192).all()  # de-scaled into the input frame


def test_nc_override_logs_and_rebuilds(caplog):
    m = Model(MODELS / "yolov5s.yaml", nc=10, verbose=False)
    assert m.nc == 10 and m.model[-1].m[0].out_channels == 3 * 15 and len(m.names) == 10


def test_anchor_count_only():
    cfg = yaml.safe_load((MODELS / "yolov5n.yaml").read_text())
    cfg["anchors"] = 3
    det = Model(cfg, verbose=False).model[-1]
    assert det.anchors.shape == (3, 3, 2) and det.na == 3


@pytest.mark.parametrize("edit, message", [
    (lambda c: c["backbone"].__setitem__(2, [-1, 3, "C4", [128]]), r"layer 2 .*unknown module 'C4'"),
    (lambda c: c["head"].__setitem__(2, [[-1, 99], 1, "Concat", [1]]), r"layer 12 .*'from' index 99"),
    (lambda c: c["backbone"].__setitem__(1, [-1, 1, "Conv"]), r"layer 1 .*\[from, number, module, args\]"),
    (lambda c: c.pop("anchors"), r"missing key\(s\) anchors"),
    (lambda c: c["backbone"].insert(7, [-1, 1, "EMA", [48]]), r"layer 7 .*EMA: 256 input channels|layer 7 .*EMA"),
    (lambda c: c["backbone"].__setitem__(7, [-1, 1, "SA", [512, 96]]), r"layer 7 .*SA: .*multiple of 192"),
])
def test_bad_yaml_names_the_line(tmp_path, edit, message):
    cfg = yaml.safe_load((MODELS / "yolov5s.yaml").read_text())
    edit(cfg)
    f = tmp_path / "bad.yaml"
    f.write_text(yaml.safe_dump(cfg, sort_keys=False))
    with pytest.raises(ModelYAMLError, match=message) as e:
        Model(f, verbose=False)
    assert "bad.yaml" in str(e.value)


def test_yaml_found_by_bare_name():
    assert Model("yolov5n.yaml", verbose=False).yaml_file.endswith("models/yolov5n.yaml")
    with pytest.raises(FileNotFoundError, match="not_a_model.yaml"):
        Model("not_a_model.yaml", verbose=False)


def test_cli_prints_layer_table_and_summary(caplog):
    from ultralytics.utils import LOGGER

    LOGGER.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.INFO, logger=LOGGER.name):
            main(["--cfg", "models/yolov5s-ema.yaml"])
    finally:
        LOGGER.removeHandler(caplog.handler)
    text = caplog.text
    assert "EMA" in text and "[256]" in text
    assert re.search(r"yolov5s-ema summary: 278 layers, 7238685 parameters, 7238685 gradients, 16\.\d GFLOPs", text)


def test_modules_receive_scaled_channels():
    m = build("yolov5x-p2-ema")
    assert [m.model[i].gn.num_channels for i in (14, 19, 24, 28, 32)] == [20, 10, 10, 10, 20]  # 640/320 ch / 32
    m = build("yolov5s-ca")
    assert isinstance(m.model[7], CA) and m.model[7].conv_h.out_channels == 256
    assert isinstance(build("yolov5s-sa").model[10], SA)
