"""ECA-Net's classifiers (issue 25): models/cls/eca-resnet{18,34,50,101,152}.yaml and eca-mobilenetv2.yaml against
ECA-Net's own code (github.com/BangguWu/ECANet, models/eca_resnet.py and eca_mobilenetv2.py), which the tests cannot
import. What was measured once with that code, in a scratch directory, with the published checkpoints' kernel sizes
(k3577, k3357, k3557, k3357, k3357; MobileNetV2's own rule, 1 below 96 channels, 3 from 96):

- parameter counts (``sum(p.numel() for p in model.parameters())``), the number of state_dict tensors and a hash of
  their sorted ``name:shape`` lines;
- the logits of each model on one fixed input (``torch.manual_seed(0); torch.rand(1, 3, 64, 64)``, eval mode) after
  every tensor of its state_dict was replaced by ``fill(name, shape)`` below: a generator seeded by the CRC-32 of
  ECA-Net's key name, so the weights depend on nothing but the names and shapes. Each test writes those weights
  itself in ECA-Net's ``main.py`` format (a ``.pth.tar`` dict with ``state_dict`` under DataParallel's ``module.``
  names), loads them through the restricted loader into our model and compares the logits with the recorded ones.
  The key names come from our inverse mapping, whose key set must hash to ECA-Net's: a wrong name in the mapping
  gives a tensor another fill (or no key), so the recorded logits catch it.

timm's ECA-ResNets (models/cls/ecaresnet*.yaml) are compared with timm itself (a test dependency): parameter counts
equal ``timm.create_model(name)``'s, and timm's state_dict loads strictly and gives the same logits.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import pickle
import zlib
from pathlib import Path

import pytest
import torch

from models.classify import ClassificationModel, count_params, load_cls_yaml, parse_ksize, with_ksize
from models.yolo import ModelYAMLError
from utils.checkpoint import CheckpointError
from utils.ecanet import ecanet_key_map, load_ecanet_weights, load_timm_weights, timm_key_map, to_ecanet_state_dict

ROOT = Path(__file__).resolve().parents[1]
CLS = ROOT / "models" / "cls"

# yaml: (ECA-Net function, kernel sizes, parameters, state_dict tensors, hash of sorted name:shape, logits[0, :5], sum)
ECANET = {
    "eca-resnet18": ("eca_resnet18", [3, 5, 7, 7], 11_689_556, 130, "309b1b0eec3ecf80",
                     [0.129089, 0.079049, 0.517366, -0.218197, -0.50641], -13.1351),
    "eca-resnet34": ("eca_resnet34", [3, 3, 5, 7], 21_797_744, 234, "42f592c40d08d966",
                     [0.010921, -0.154252, 0.66563, -0.211215, -0.715925], -13.44756),
    "eca-resnet50": ("eca_resnet50", [3, 5, 5, 7], 25_557_112, 336, "32fd2f315319d6f4",
                     [-0.290404, 0.346444, 0.094777, -0.86645, -0.096376], 2.1296),
    "eca-resnet101": ("eca_resnet101", [3, 3, 5, 7], 44_549_317, 659, "b0fbd0fb470b2435",
                      [-0.459026, 0.578272, -0.812658, -1.920911, 0.614385], 29.01386),
    "eca-resnet152": ("eca_resnet152", [3, 3, 5, 7], 60_193_042, 982, "c31a3b90e5c5be7d",
                      [-1.223747, 0.677379, -0.942201, -2.766616, 0.082144], 69.52689),
    "eca-mobilenetv2": ("eca_mobilenet_v2", [1, 3], 3_504_903, 331, "d21790e38385e365",
                        [0.087134, 0.064632, 0.083812, 0.241291, -0.162588], -0.75111),
}
TORCHVISION = {"eca-resnet50": 25_557_032, "eca-mobilenetv2": 3_504_872}  # the same networks without ECA
# ECA-Net's README table ("Param."): its paras_flops.py divides thop's count by 1024**2, not 1e6
README_M = {"eca-resnet18": 11.15, "eca-resnet34": 20.79, "eca-resnet50": 24.37, "eca-resnet101": 42.49,
            "eca-resnet152": 57.41, "eca-mobilenetv2": 3.34}


def fill(key: str, shape: tuple[int, ...]) -> torch.Tensor:
    """The deterministic tensor for ECA-Net's state_dict key ``key`` (without ``module.``) of ``shape``."""
    g = torch.Generator().manual_seed(zlib.crc32(key.encode()))
    leaf = key.rsplit(".", 1)[-1]
    if leaf == "num_batches_tracked":
        return torch.tensor(0)
    r = torch.randn(shape, generator=g, dtype=torch.float64)
    if leaf == "running_var":
        return (0.5 + torch.rand(shape, generator=g, dtype=torch.float64)).float()
    if leaf in ("running_mean", "bias"):
        return (0.1 * r).float()
    if len(shape) == 1:  # BatchNorm weight
        return (1 + 0.1 * r).float()
    return (r / math.sqrt(math.prod(shape[1:]))).float()


def keys_hash(sd: dict[str, torch.Tensor]) -> str:
    return hashlib.sha256("\n".join(f"{k}:{tuple(v.shape)}" for k, v in sorted(sd.items())).encode()).hexdigest()[:16]


def save_ecanet_checkpoint(path: Path, sd: dict[str, torch.Tensor], arch: str) -> Path:
    """A checkpoint as ECA-Net's main.py writes it (DataParallel names, optimizer state)."""
    torch.save({"epoch": 100, "arch": arch, "state_dict": {f"module.{k}": v for k, v in sd.items()},
                "best_prec1": 77.42, "optimizer": {"state": {}, "param_groups": [{"lr": 0.1, "params": [0, 1]}]}},
               path)
    return path


_models: dict[str, ClassificationModel] = {}


@pytest.fixture(scope="module")
def build():
    """One model per YAML for the whole module (ResNet-152 is the slow one)."""

    def get(name: str) -> ClassificationModel:
        if name not in _models:
            torch.manual_seed(0)
            _models[name] = ClassificationModel(CLS / f"{name}.yaml", verbose=False)
        return _models[name]

    yield get
    _models.clear()


@pytest.mark.parametrize("name", sorted(ECANET))
def test_parameter_count_equals_ecanet_code(build, name):
    arch, ks, params, n_keys, digest, *_ = ECANET[name]
    m = build(name)
    assert load_cls_yaml(CLS / f"{name}.yaml")["k_size"] == ks  # the published checkpoint's kernel sizes
    assert count_params(m) == params
    sd = to_ecanet_state_dict(m)
    assert len(sd) == n_keys == len(m.state_dict()) and keys_hash(sd) == digest
    if name in TORCHVISION:
        eca = sum(p.numel() for k, p in m.named_parameters() if ".att." in k)
        assert params - eca == TORCHVISION[name]
    assert round(params / 1024**2, 2) == README_M[name] or name == "eca-resnet152"  # 57.40 here (see README)


@pytest.mark.parametrize("name", sorted(ECANET))
def test_ecanet_checkpoint_loads_strictly_with_same_logits(build, name, tmp_path):
    arch, ks, params, n_keys, digest, logits5, total = ECANET[name]
    m = build(name)
    sd = {k: fill(k, tuple(v.shape)) for k, v in to_ecanet_state_dict(m).items()}
    assert keys_hash(sd) == digest
    load_ecanet_weights(m, save_ecanet_checkpoint(tmp_path / f"{arch}.pth.tar", sd, arch))
    torch.manual_seed(0)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        y = m.eval()(x)[1]
    assert torch.allclose(y[0, :5], torch.tensor(logits5), atol=2e-5), (y[0, :5].tolist(), logits5)
    assert y.sum().item() == pytest.approx(total, abs=1e-3)
    assert all(torch.equal(m.state_dict()[ours], sd[theirs]) for theirs, ours in ecanet_key_map(m).items())


def test_ecanet_roundtrip_and_errors(tmp_path):
    torch.manual_seed(1)
    m = ClassificationModel(CLS / "eca-resnet18.yaml", verbose=False).eval()
    f = save_ecanet_checkpoint(tmp_path / "ours.pth.tar", to_ecanet_state_dict(m), "eca_resnet18")
    torch.manual_seed(2)
    m2 = load_ecanet_weights(ClassificationModel(CLS / "eca-resnet18.yaml", verbose=False), f).eval()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(m(x)[1], m2(x)[1])
    load_ecanet_weights(m2, torch.load(f, weights_only=True)["state_dict"])  # a loaded dict, module. names
    # other kernel sizes than the checkpoint's: every misfit named, nothing loaded
    d = with_ksize({**load_cls_yaml(CLS / "eca-resnet18.yaml"), "yaml_file": "eca-resnet18.yaml"}, "3333")
    with pytest.raises(CheckpointError, match=r"6 of another shape: layer2.0.eca.conv.weight \(1, 1, 5\) vs ours"):
        load_ecanet_weights(ClassificationModel(d, verbose=False), f)
    with pytest.raises(CheckpointError, match="104 missing: layer1.2.conv1.weight"):  # an ECA-Net18 file
        load_ecanet_weights(ClassificationModel(CLS / "eca-resnet34.yaml", verbose=False), f)
    torch.save({"epoch": 1}, tmp_path / "bad.pth.tar")
    with pytest.raises(CheckpointError, match="bad.pth.tar: not an ECA-Net or timm checkpoint"):
        load_ecanet_weights(m2, tmp_path / "bad.pth.tar")


class _Payload:
    def __reduce__(self):
        return os.system, ("touch pwned",)


def test_ecanet_checkpoint_is_read_by_the_restricted_loader(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with open("evil.pth.tar", "wb") as fh:
        pickle.dump({"state_dict": {"fc.weight": torch.zeros(1)}, "x": _Payload()}, fh)
    m = ClassificationModel(CLS / "eca-resnet18.yaml", verbose=False)
    with pytest.raises(CheckpointError):
        load_ecanet_weights(m, "evil.pth.tar")
    assert not (tmp_path / "pwned").exists()


def test_ksize_option_and_errors(tmp_path):
    d = {**load_cls_yaml(CLS / "eca-resnet50.yaml"), "yaml_file": "eca-resnet50.yaml"}
    m = ClassificationModel(with_ksize(d, "3333"), verbose=False)
    assert count_params(m) == TORCHVISION["eca-resnet50"] + 16 * 3
    assert [b.att.conv.kernel_size[0] for b in m.model[5]] == [3, 3, 3]
    assert parse_ksize("3,5,5,7") == parse_ksize("3557") == parse_ksize([3, 5, 5, 7]) == [3, 5, 5, 7]
    with pytest.raises(ValueError, match="positive odd"):
        parse_ksize("3457")
    with pytest.raises(ValueError, match="digits"):
        parse_ksize("3a57")
    with pytest.raises(ValueError, match="has 4 kernel sizes"):
        with_ksize(d, "357")
    with pytest.raises(ValueError, match="has no 'k_size' key"):
        with_ksize(load_cls_yaml(CLS / "resnet50-cifar100-eca.yaml"), "3557")
    with pytest.raises(ModelYAMLError, match="'k_size' must be a list of positive odd"):
        ClassificationModel({**d, "k_size": [3, 4, 5, 7]}, verbose=False)
    with pytest.raises(ModelYAMLError, match="'attention_at' must be one of expanded, projection"):
        ClassificationModel({**load_cls_yaml(CLS / "eca-mobilenetv2.yaml"), "attention_at": "input"}, verbose=False)


def test_cli_prints_exact_count(caplog):
    from ultralytics.utils import LOGGER

    from models.yolo import main as yolo_main

    LOGGER.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.INFO, logger=LOGGER.name):
            yolo_main(["--cfg", "models/cls/eca-resnet18.yaml"])  # yolo.py hands classifier YAMLs to classify.py
    finally:
        LOGGER.removeHandler(caplog.handler)
    assert "eca-resnet18 summary" in caplog.text and "11689556 parameters" in caplog.text
    assert "paper: ECA-Net18: 11.15M params (= 11,689,556 / 1024^2)" in caplog.text


def test_train_one_epoch_with_ksize_and_export_onnx(tmp_path):
    """classify/train.py trains eca-resnet18 (--ksize 3357) one tiny epoch; its checkpoint exports to ONNX, parity."""
    import classify.train as cls_train
    import export
    from utils.checkpoint import load_model
    from utils.clsdata import make_shapes_cls_dataset

    data = make_shapes_cls_dataset(tmp_path / "shapes-cls", n_train=16, n_val=8, imgsz=32, classes=2)
    trainer = cls_train.run(["--data", str(data), "--model", "models/cls/eca-resnet18.yaml", "--ksize", "3357",
                             "--img", "32", "--epochs", "1", "--batch-size", "8", "--optimizer", "SGD", "--workers",
                             "0", "--project", str(tmp_path / "runs"), "--noplots"])
    w = Path(trainer.last)
    m = load_model(w, fuse=False)
    assert m.yaml["k_size"] == [3, 3, 5, 7] and m.nc == 2
    assert [b.att.conv.kernel_size[0] for b in m.model[3]] == [3, 3]
    res = export.run(weights=w, include=["onnx"], imgsz=[32])
    assert res["onnx"]["max_abs_diff"] < 1e-4, res["onnx"]["max_abs_diff"]
    with pytest.raises(ValueError, match="positive odd"):
        cls_train.run(["--data", str(data), "--model", "models/cls/eca-resnet18.yaml", "--ksize", "3456"])


# timm name: parameters in M on timm's model card (seeds: the ECA-ResNet card)
TIMM_CARD = {"ecaresnet50d": 25.58, "ecaresnet101d": 44.57, "ecaresnetlight": 30.16, "ecaresnet50d_pruned": 19.94,
             "ecaresnet101d_pruned": 24.88}


@pytest.mark.parametrize("name", sorted(TIMM_CARD))
def test_timm_ecaresnet_equal_counts_and_logits(name):
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    theirs = timm.create_model(name, pretrained=False).eval()
    for bn in (m for m in theirs.modules() if isinstance(m, torch.nn.BatchNorm2d)):  # non-trivial statistics
        bn.running_mean.uniform_(-0.1, 0.1)
        bn.running_var.uniform_(0.5, 1.5)
        bn.weight.data.uniform_(0.5, 1.5)
        bn.bias.data.uniform_(-0.1, 0.1)
    ours = ClassificationModel(CLS / f"{name}.yaml", verbose=False)
    n = count_params(ours)
    assert n == sum(p.numel() for p in theirs.parameters()) and round(n / 1e6, 2) == TIMM_CARD[name]
    sd = theirs.state_dict()
    assert sorted(timm_key_map(ours)) == sorted(sd)
    load_timm_weights(ours, sd).eval()
    x = torch.rand(2, 3, 65, 65)  # odd sizes: the average-pool shortcuts' ceil_mode counts
    with torch.no_grad():
        assert torch.allclose(ours(x)[1], theirs(x), atol=1e-5)
    del theirs


def test_timm_weights_file_and_recipe(tmp_path):
    timm = pytest.importorskip("timm")
    from utils.engine_cls import load_cls_hyp

    theirs = timm.create_model("ecaresnetlight", pretrained=False)
    torch.save(theirs.state_dict(), tmp_path / "ecaresnetlight.pth")  # a timm .pth: a bare state_dict
    ours = load_timm_weights(ClassificationModel(CLS / "ecaresnetlight.yaml", verbose=False),
                             tmp_path / "ecaresnetlight.pth")
    assert torch.equal(ours.model[-1].linear.weight, theirs.fc.weight)
    with pytest.raises(CheckpointError, match="does not fit ecaresnet50d"):
        load_timm_weights(ClassificationModel(CLS / "ecaresnet50d.yaml", verbose=False),
                          tmp_path / "ecaresnetlight.pth")
    hyp = load_cls_hyp("hyp.imagenet-ecaresnet.yaml")
    assert (hyp["optimizer"], hyp["lr0"], hyp["momentum"], hyp["weight_decay"]) == ("SGD", 0.1, 0.9, 1e-4)
    assert hyp["schedule"] == "step" and [round(e * 100) for e in hyp["milestones"]] == [30, 60, 90]
    assert hyp["augment"] and hyp["scale"] == 0.92  # RandomResizedCrop(0.08-1) + flip
