"""Classifiers of Tables 1, 3 and 4: exact parameter counts of every YAML, the paper's rounding, equality with
torchvision's ResNet50/MobileNetV2 and YOLOv5's -cls models, EMA's ablation switch and NAM against their formulas."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import yaml

from models.attention import NAM
from models.classify import (
    ClassificationModel,
    LinearHead,
    cls_yaml_from_detection,
    count_macs,
    count_params,
    is_classification_yaml,
    main,
)
from models.common import CA, EMA
from models.yolo import ModelYAMLError

ROOT = Path(__file__).resolve().parents[1]
CLS = ROOT / "models" / "cls"

# Every YAML's exact count (all parameters) and, for the rows the paper counted without normalisation layers, that
# count too. The first number is what `python models/classify.py --cfg ...` prints.
EXACT = {
    "resnet50-cifar100": 23_705_252, "resnet50-cifar100-se": 26_236_244, "resnet50-cifar100-cbam": 26_221_764,
    "resnet50-cifar100-sa": 23_705_960, "resnet50-cifar100-eca": 23_705_338, "resnet50-cifar100-nam": 23_735_460,
    "resnet50-cifar100-ca": 25_623_084, "resnet50-cifar100-ema": 23_903_620, "resnet50-cifar100-ema16": 24_494_948,
    "resnet50-cifar100-ema-no": 23_903_620,
    "resnet101-cifar100": 42_697_380, "resnet101-cifar100-se": 47_475_092, "resnet101-cifar100-cbam": 47_443_782,
    "resnet101-cifar100-sa": 42_698_904, "resnet101-cifar100-eca": 42_697_551, "resnet101-cifar100-nam": 42_762_404,
    "resnet101-cifar100-ca": 46_322_828, "resnet101-cifar100-ema": 43_072_004,
    "mobilenetv2": 3_504_872, "mobilenetv2-se": 3_888_208, "mobilenetv2-cbam": 3_882_376, "mobilenetv2-sa": 3_507_536,
    "mobilenetv2-eca": 3_504_950, "mobilenetv2-nam": 3_519_080, "mobilenetv2-ca": 3_950_648,
    "mobilenetv2-ema": 3_551_066,
    # YOLOv5's own ClassificationModel(DetectionModel("yolov5?.yaml"), nc=1000, cutoff=10), counted with its code
    "yolov5n-cls": 2_493_000, "yolov5s-cls": 5_453_480, "yolov5m-cls": 12_957_640, "yolov5l-cls": 26_552_680,
    "yolov5x-cls": 48_097_160,
    "cnn4-ema": 244_324,  # the demo classifier
    # ECA-Net's own eca_resnet*/eca_mobilenet_v2 with the published checkpoints' kernel sizes, counted with its code
    # (tests/test_eca_resnet.py has the rest)
    "eca-resnet18": 11_689_556, "eca-resnet34": 21_797_744, "eca-resnet50": 25_557_112, "eca-resnet101": 44_549_317,
    "eca-resnet152": 60_193_042, "eca-mobilenetv2": 3_504_903,
    # timm's ECA-ResNets, counted with timm.create_model(name)
    "ecaresnet50d": 25_576_350, "ecaresnet101d": 44_568_563, "ecaresnetlight": 30_162_046,
    "ecaresnet50d_pruned": 19_939_713, "ecaresnet101d_pruned": 24_876_040,
}
# Rows whose published count is ours without BatchNorm/GroupNorm parameters (Table 1 CA/EMA, Table 4).
WITHOUT_NORMS = {"resnet50-cifar100-ca": 25_569_020, "resnet50-cifar100-ema": 23_849_556,
                 "resnet50-cifar100-ema16": 24_439_940, "resnet50-cifar100-ema-no": 23_849_556,
                 "resnet101-cifar100-ca": 46_215_452, "resnet101-cifar100-ema": 42_964_628}
# The paper's parameters in M; each matches ours rounded (or, Table 4, truncated) to 0.01M.
PAPER = {"resnet50-cifar100": 23.71, "resnet50-cifar100-sa": 23.71, "resnet50-cifar100-eca": 23.71,
         "resnet50-cifar100-ca": 25.57, "resnet50-cifar100-ema": 23.85, "resnet50-cifar100-ema16": 24.44,
         "resnet50-cifar100-ema-no": 23.84, "resnet101-cifar100": 42.70, "resnet101-cifar100-ca": 46.22,
         "resnet101-cifar100-ema": 42.96, "mobilenetv2": 3.50, "mobilenetv2-se": 3.89, "mobilenetv2-ca": 3.95,
         "mobilenetv2-ema": 3.55}
# Rows where our module differs from the one counted in the paper (see README): ours, paper
DIFFERS = {"resnet50-cifar100-cbam": (26.22, 26.24), "resnet50-cifar100-nam": (23.74, 23.71),
           "mobilenetv2-cbam": (3.88, 3.89)}

_cache: dict[str, ClassificationModel] = {}


def build(name: str) -> ClassificationModel:
    if name not in _cache:
        torch.manual_seed(0)
        _cache[name] = ClassificationModel(CLS / f"{name}.yaml", verbose=False)
    return _cache[name]


def test_every_yaml_is_listed():
    assert sorted(p.stem for p in CLS.glob("*.yaml")) == sorted(EXACT)


@pytest.mark.parametrize("name", sorted(EXACT))
def test_exact_parameter_count(name):
    m = build(name)
    assert count_params(m) == EXACT[name]
    if name in WITHOUT_NORMS:
        assert count_params(m, norms=False) == WITHOUT_NORMS[name]
    if name in PAPER:
        n = WITHOUT_NORMS.get(name, EXACT[name]) / 1e6
        assert PAPER[name] in (round(n, 2), int(n * 100) / 100), f"{name}: {n:.4f}M vs paper {PAPER[name]}"
    if name in DIFFERS:
        assert round(EXACT[name] / 1e6, 2) == DIFFERS[name][0]
    _cache.pop(name, None) if "101" in name or "152" in name else None  # keep memory low


def _copy_in_order(src: nn.Module, dst: nn.Module) -> None:
    """Load ``src``'s state into ``dst`` tensor by tensor in order (the layouts differ only in names)."""
    s, d = list(src.state_dict().values()), dst.state_dict()
    assert len(s) == len(d)
    for (k, v), w in zip(d.items(), s):
        assert v.shape == w.shape, k
    dst.load_state_dict(dict(zip(d, s)))


def test_resnet50_equals_torchvision_with_cifar_stem():
    tv = pytest.importorskip("torchvision").models.resnet50(num_classes=100)
    tv.conv1, tv.maxpool = nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.Identity()
    ours = build("resnet50-cifar100")
    _copy_in_order(tv, ours)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(ours.eval()(x)[1], tv.eval()(x), atol=1e-4)


def test_mobilenetv2_equals_torchvision():
    tv = pytest.importorskip("torchvision").models.mobilenet_v2()
    ours = build("mobilenetv2")
    _copy_in_order(tv, ours)
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        probs, logits = ours.eval()(x)
        assert torch.allclose(logits, tv.eval()(x), atol=1e-4)
        assert torch.allclose(probs.sum(1), torch.ones(2))
    assert count_macs(ours, 224) == 300_774_272  # the paper's "300M M-Adds"


def test_attention_sits_where_the_papers_put_it():
    r = build("resnet50-cifar100-ema").model
    assert [type(b.att) for stage in r[1:5] for b in stage] == [EMA] * 16
    assert r[1][0].att.gn.num_groups == 256 // 32 and r[4][2].att.gn.num_groups == 2048 // 32
    m = build("mobilenetv2-ca").model
    blocks = [b for layer in m[1:10] for b in (layer if isinstance(layer, nn.Sequential) else [layer])]
    assert isinstance(blocks[0].att, nn.Identity) and all(isinstance(b.att, CA) for b in blocks[1:])
    assert [b.att.conv1.in_channels for b in blocks[1:4]] == [96, 144, 144]  # expanded width, after the depthwise
    e = [b.att for layer in build("mobilenetv2-ema").model[2:5] for b in [layer]]
    assert [x.groups for x in e] == [32, 16, 16]  # 144 channels do not split into 32 groups
    assert isinstance(build("resnet50-cifar100").model[1][0].att, nn.Identity)


def test_ema_ablation_options_from_yaml():
    no = build("resnet50-cifar100-ema-no").model[1][0].att
    assert isinstance(no, EMA) and no.cross_spatial is False and no.groups == 32
    assert build("resnet50-cifar100-ema16").model[3][0].att.groups == 16
    assert build("resnet50-cifar100-ema").model[3][0].att.cross_spatial is True


def test_ema_without_cross_spatial_learning_matches_formula():
    torch.manual_seed(0)
    m = EMA(64, factor=8, cross_spatial=False).eval()
    x = torch.randn(2, 64, 7, 9)
    g = x.reshape(16, 8, 7, 9)
    pooled = torch.cat((g.mean(3, keepdim=True), g.mean(2, keepdim=True).transpose(2, 3)), 2)
    a_h, a_w = m.conv1x1(pooled).split((7, 9), 2)
    x1 = m.gn(g * a_h.sigmoid() * a_w.transpose(2, 3).sigmoid())
    x2 = m.conv3x3(g)
    expected = (g * torch.sigmoid(0.5 * x1 + 0.5 * x2)).reshape(2, 64, 7, 9)
    assert torch.allclose(m(x), expected, atol=1e-6)
    full = EMA(64, factor=8)
    full.load_state_dict(m.state_dict())  # same parameters, different fusion
    assert not torch.allclose(full.eval()(x), m(x), atol=1e-3)
    ts = torch.jit.trace(m, x)  # the switch is a constructor choice: one traced graph, any input size
    y = torch.randn(1, 64, 5, 4)
    assert torch.allclose(ts(y), m(y), atol=1e-6)


def test_nam_matches_formula_and_weights_are_constants():
    torch.manual_seed(0)
    m = NAM(16)
    with torch.no_grad():
        m.bn.weight.uniform_(-2, 2)
    x = torch.randn(4, 16, 5, 5, requires_grad=True)
    bn = nn.functional.batch_norm(x, None, None, m.bn.weight, m.bn.bias, training=True)
    w = (m.bn.weight.abs() / m.bn.weight.abs().sum()).view(1, -1, 1, 1)
    assert torch.allclose(m(x), x * torch.sigmoid(w * bn), atol=1e-6)
    assert sum(p.numel() for p in m.parameters()) == 32
    m(x).sum().backward()
    assert m.bn.weight.grad is not None and x.grad is not None


def test_yolov5_cls_equals_yolov5s_backbone_with_classify_head():
    d = yaml.safe_load((ROOT / "models" / "yolov5s.yaml").read_text())
    cls = cls_yaml_from_detection(d, nc=1000, cutoff=10)
    assert is_classification_yaml(cls) and not is_classification_yaml(d)
    m = ClassificationModel(cls, verbose=False)
    ref = build("yolov5s-cls")
    assert {k: v.shape for k, v in m.state_dict().items()} == {k: v.shape for k, v in ref.state_dict().items()}
    with pytest.raises(ModelYAMLError, match="--cutoff 40"):
        cls_yaml_from_detection(d, nc=10, cutoff=40)


def test_train_and_eval_outputs_and_fuse():
    m = ClassificationModel(CLS / "yolov5n-cls.yaml", nc=7, verbose=False)
    x = torch.rand(2, 3, 64, 64)
    assert m.train()(x).shape == (2, 7)
    with torch.no_grad():
        probs, logits = m.eval()(x)
        m.fuse(verbose=False)
        assert m.is_fused() and torch.allclose(m(x)[1], logits, atol=1e-4)
    loss, items = m.loss({"img": x, "cls": torch.tensor([0, 6])}, (probs, logits))
    assert torch.isclose(loss, nn.functional.cross_entropy(logits, torch.tensor([0, 6]))) and "loss" in items
    m.reshape_outputs(3)
    assert isinstance(m.model[-1].linear, nn.Linear) and m.model[-1].linear.out_features == 3 and m.nc == 3


@pytest.mark.parametrize("edit, message", [
    (lambda d: d["backbone"][1][3].__setitem__(2, "EMAX"), r"layer 1 .*unknown attention module 'EMAX'"),
    (lambda d: d["backbone"][1][3].__setitem__(0, 100), r"layer 1 .*EMA: 100 input channels"),
    (lambda d: d["head"].__setitem__(0, [-1, 1, "ConvAct", [8]]), "the last layer must be a classification head"),
    (lambda d: d.pop("width_multiple"), "missing width_multiple"),
])
def test_bad_yaml_names_the_line(tmp_path, edit, message):
    d = yaml.safe_load((CLS / "resnet50-cifar100-ema.yaml").read_text())
    d["backbone"] = [d["backbone"][0], [-1, 1, "ResBottleneck", [256, 1, "EMA"]]]
    edit(d)
    f = tmp_path / "bad.yaml"
    f.write_text(yaml.safe_dump(d))
    with pytest.raises(ModelYAMLError, match=message):
        ClassificationModel(f, verbose=False)


def test_cli_prints_counts_next_to_paper(caplog):
    from ultralytics.utils import LOGGER

    from models.yolo import main as yolo_main

    LOGGER.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.INFO, logger=LOGGER.name):
            main(["--cfg", "mobilenetv2-ema"])  # bare name, found in models/cls
            yolo_main(["--cfg", "models/cls/resnet50-cifar100-ema-no.yaml"])  # yolo.py hands classifiers over
    finally:
        LOGGER.removeHandler(caplog.handler)
    text = caplog.text
    assert "resnet50-cifar100-ema-no summary" in text and "(23.85M without BatchNorm/GroupNorm parameters)" in text
    assert "mobilenetv2-ema summary" in text and "3551066 parameters" in text
    assert "at 224x224; paper: EMA: 3.55M params, 306M M-Adds" in text
    assert isinstance(ClassificationModel(CLS / "yolov5n-cls.yaml", verbose=False).model[-1], nn.Module)
    assert LinearHead(8, 2).train()(torch.rand(1, 8, 3, 3)).shape == (1, 2)


def test_official_yolov5_cls_checkpoint_loads(tmp_path, monkeypatch):
    """An official yolov5?-cls.pt (YOLOv5's own classes, no YAML stored) loads through the restricted loader."""
    import sys
    import types

    from utils.checkpoint import load_model

    torch.manual_seed(0)
    ours = ClassificationModel(CLS / "yolov5s-cls.yaml", nc=10, verbose=False).eval()
    for bn in (m for m in ours.modules() if isinstance(m, nn.BatchNorm2d)):  # non-trivial statistics
        bn.running_mean.uniform_(-0.1, 0.1)
        bn.running_var.uniform_(0.5, 1.5)
    common, yolo = types.ModuleType("models.common"), types.ModuleType("models.yolo")
    for mod, names in ((common, ("Conv", "C3", "Bottleneck", "Classify")), (yolo, ("ClassificationModel",))):
        for name in names:  # YOLOv5's classes, as plain attribute holders (pickled under their module paths)
            setattr(mod, name, type(name, (nn.Module,), {"__module__": mod.__name__, "__qualname__": name}))

    def original(layer: nn.Module) -> nn.Module:
        o = getattr(common, type(layer).__name__)()
        for k, v in layer.named_children():
            o.add_module(k, nn.Sequential(*map(original, v)) if isinstance(v, nn.Sequential) and k == "m"
                         else original(v) if type(v).__name__ in ("Conv", "Bottleneck") else v)
        o.__dict__.update({k: v for k, v in layer.__dict__.items() if k in ("i", "f", "type", "np", "add")})
        return o

    model = yolo.ClassificationModel()
    model.model = nn.Sequential(*map(original, ours.model))
    model.stride, model.save, model.nc, model.names = torch.tensor([32.0]), [], 10, [f"c{i}" for i in range(10)]
    with monkeypatch.context() as mp:
        mp.setitem(sys.modules, "models.common", common)
        mp.setitem(sys.modules, "models.yolo", yolo)
        torch.save({"model": model.half(), "ema": None, "epoch": 99, "optimizer": None}, tmp_path / "yolov5s-cls.pt")
    loaded = load_model(tmp_path / "yolov5s-cls.pt", fuse=False)
    assert isinstance(loaded, ClassificationModel) and loaded.yaml["width_multiple"] == 0.5 and loaded.nc == 10
    assert loaded.names[3] == "c3"
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(loaded(x)[1], ours.half().float()(x)[1], atol=1e-3)
