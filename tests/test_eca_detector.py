"""The ECA-ResNet-50 detector (models/hub/yolov5-eca-resnet50.yaml): ECA-Net's backbone (models/cls/eca-resnet50.yaml
without its FC) under YOLOv5 v6.0's PAN neck and Detect head. Parameter counts, strides, ECA-Net backbone weights,
a tiny train/val run and ONNX parity. Built once per module; tiny images."""

from __future__ import annotations

import math
from copy import deepcopy
from pathlib import Path

import pytest
import torch

from models.classify import ClassificationModel, ResBottleneck
from models.yolo import Model, resolve_cfg
from tests.fingerprint import fill_deterministic_
from tests.helpers import onnx_relative_error, shapes_data

CFG = Path(__file__).resolve().parents[1] / "models" / "hub" / "yolov5-eca-resnet50.yaml"
BACKBONE = range(6)  # stem, max-pool, the four stages
PARAMS = 50_112_141  # the whole detector, nc 80
BACKBONE_PARAMS = 23_508_112  # ECA-Net50's 25,557,112 less its FC (2048 x 1000 + 1000)


@pytest.fixture(scope="module")
def detector() -> Model:
    return Model(CFG, verbose=False)


@pytest.fixture(scope="module")
def classifier() -> ClassificationModel:
    return ClassificationModel("eca-resnet50", verbose=False)


def _params(layers) -> int:
    return sum(p.numel() for m in layers for p in m.parameters())


def test_parameters_strides_and_stages(detector):
    assert resolve_cfg("yolov5-eca-resnet50") == CFG
    assert sum(p.numel() for p in detector.parameters()) == PARAMS
    assert _params(detector.model[i] for i in BACKBONE) == BACKBONE_PARAMS
    assert detector.stride.tolist() == [8, 16, 32]
    stages = [detector.model[i] for i in range(2, 6)]
    assert [len(s) for s in stages] == [3, 4, 6, 3]
    assert all(isinstance(b, ResBottleneck) for s in stages for b in s)
    assert [s[0].att.conv.kernel_size[0] for s in stages] == [3, 5, 5, 7]  # k3557
    x = torch.zeros(1, 3, 64, 64)
    with torch.no_grad():
        y = x
        outs = []
        for i in BACKBONE:
            y = detector.model[i](y)
            outs.append(y.shape[1:])
    assert outs[3:] == [(512, 8, 8), (1024, 4, 4), (2048, 2, 2)]  # C3/C4/C5 at strides 8/16/32


def test_backbone_equals_the_classifier_without_its_fc(detector, classifier):
    assert _params(classifier.model[i] for i in BACKBONE) == BACKBONE_PARAMS
    assert sum(p.numel() for p in classifier.parameters()) - _params([classifier.model[-1]]) == BACKBONE_PARAMS
    det = {k: v.shape for i in BACKBONE for k, v in detector.model[i].state_dict().items()}
    cls = {k: v.shape for i in BACKBONE for k, v in classifier.model[i].state_dict().items()}
    assert det == cls


def test_ecanet_backbone_weights_transfer(detector, classifier):
    from utils.checkpoint import transfer_weights
    from utils.ecanet import ecanet_backbone_key_map, load_ecanet_backbone, to_ecanet_state_dict

    src = fill_deterministic_(deepcopy(classifier))
    sd = to_ecanet_state_dict(src)  # ECA-Net's names, as its eca_resnet50_k3557.pth.tar holds them
    n_backbone = sum(1 for i in BACKBONE for _ in detector.model[i].state_dict())
    assert len(ecanet_backbone_key_map(detector)) == n_backbone == len(sd) - 2  # all but fc.weight, fc.bias
    det = deepcopy(detector)
    assert load_ecanet_backbone(det, {"state_dict": {f"module.{k}": v for k, v in sd.items()}}) == n_backbone
    for i in BACKBONE:
        for k, v in src.model[i].state_dict().items():
            assert torch.equal(det.model[i].state_dict()[k], v), (i, k)
    assert torch.equal(det.model[7].conv.weight, detector.model[7].conv.weight)  # the neck is left alone

    det2 = deepcopy(detector)
    n, _ = transfer_weights(det2, src, verbose=False)  # the project's generic path, from the classifier itself
    assert n == n_backbone
    for i in BACKBONE:
        for k, v in src.model[i].state_dict().items():
            assert torch.equal(det2.model[i].state_dict()[k], v), (i, k)


def test_ecanet_backbone_weights_of_another_architecture_fail(detector):
    from utils.checkpoint import CheckpointError
    from utils.ecanet import load_ecanet_backbone, to_ecanet_state_dict

    sd = to_ecanet_state_dict(ClassificationModel({**ClassificationModel("eca-resnet50", verbose=False).yaml,
                                                   "k_size": [3, 3, 3, 3]}, verbose=False))
    with pytest.raises(CheckpointError, match="of another shape"):
        load_ecanet_backbone(deepcopy(detector), sd)


def test_trains_and_validates(tmp_path):
    import train
    import val

    data = shapes_data(tmp_path / "data", n_train=8, n_val=4, imgsz=64, seed=0)
    trainer = train.run(cfg=str(CFG), data=str(data), epochs=1, imgsz=64, batch_size=4,
                        hyp="data/hyps/hyp.shapes.yaml", noautoanchor=True, noplots=True, workers=0,
                        project=str(tmp_path / "runs"), name="eca")
    best = Path(trainer.save_dir) / "weights" / "best.pt"
    assert best.is_file()
    stats = val.run(data=str(data), weights=str(best), imgsz=64, batch_size=4, workers=0, plots=False,
                    project=tmp_path / "val")[0]
    assert all(math.isfinite(v) for k, v in stats.items() if k.startswith("metrics/"))


def test_onnx_export_matches_pytorch(tmp_path, detector):
    model = fill_deterministic_(deepcopy(detector)).eval()
    diff = onnx_relative_error(model, tmp_path / "eca.pt", (64, 96))
    print(f"ONNX max relative difference {diff:.2e}")
    assert diff < 1e-4
