"""Classification training parity with YOLOv5's classify/train.py (issue 19).

YOLOv5 trains classifiers on resized, centre-cropped, normalised images when albumentations is not installed (its
default install); the engine's dataset applies RandomResizedCrop(0.08-1) + flip + colour jitter to every training
image, which on small images of one shape keeps the loss at chance for a whole short run. Our default is now YOLOv5's
(``augment: false``); ``--augment`` or ``augment: true`` in a recipe file brings the engine's augmentation back.

Reference numbers, measured once on the data this test generates (``make_shapes_cls_dataset(n_train=192, n_val=60,
imgsz=32, classes=3)``, seed 0) with yolov5n-cls from scratch (yolov5n.yaml cut at layer 10), ``--img 32 --epochs 8
--batch-size 32 --optimizer Adam --lr0 0.001`` (label smoothing 0.1, linear LR to 1%), CPU:

=========================================  ==============================================================
run                                        train loss per epoch
=========================================  ==============================================================
original YOLOv5 (commit 5081342, no        1.211 1.165 1.023 0.956 0.793 0.599 0.526 0.464
albumentations, ``--pretrained False``)
ours with the engine's augmentation        1.304 1.220 1.208 1.216 1.130 1.126 1.128 1.099
(the old default, now ``--augment``)
ours, default (no augmentation)            1.284 1.170 0.982 0.843 0.670 0.500 0.429 0.378
=========================================  ==============================================================

The other parts of the recipe were compared with the original's code and are the same: Adam(betas=(0.9, 0.999)) on
three groups (decay on weights, none on BatchNorm weights and biases), lr0 0.001 linear to 1% stepped per epoch, no
warmup, label smoothing 0.1, mean cross-entropy, gradient clipping at 10, EMA of the weights (decay 0.9999, tau 2000)
for validation, no AMP on CPU. The input normalisation differs (the original: ImageNet mean/std; ours: 0-1, as the
engine's validator, predictor and exports expect); with the first convolution followed by BatchNorm it changed the
curve no more than a different random stream does (final loss 0.549 with ImageNet mean/std here, 0.378 without).
"""

from __future__ import annotations

import csv

import pytest

import classify.train as cls_train
from utils.clsdata import make_shapes_cls_dataset
from utils.engine import HypError
from utils.engine_cls import ClassifierTrainer, load_cls_hyp

YOLOV5_LOSS = [1.211, 1.165, 1.023, 0.956, 0.793, 0.599, 0.526, 0.464]  # the original's curve (docstring)
OLD_FINAL = 1.099  # ours with the engine's augmentation ended at 1.099


@pytest.fixture(scope="module")
def small3(tmp_path_factory):
    return make_shapes_cls_dataset(tmp_path_factory.mktemp("data") / "shapes3", n_train=192, n_val=60, imgsz=32,
                                   classes=3)


def train_losses(trainer) -> list[float]:
    with open(trainer.save_dir / "results.csv", newline="") as f:
        return [float(r["train/loss"]) for r in csv.DictReader(f, skipinitialspace=True)]


def test_yolov5n_cls_loss_falls_as_in_yolov5(small3, tmp_path):
    t = cls_train.run(["--data", str(small3), "--model", "models/cls/yolov5n-cls.yaml", "--img", "32", "--epochs", "8",
                       "--batch-size", "32", "--optimizer", "Adam", "--lr0", "0.001", "--device", "cpu",
                       "--workers", "0", "--project", str(tmp_path), "--noplots", "--nosave"])
    loss = train_losses(t)
    assert len(loss) == 8
    # YOLOv5 ends at 0.464 (from 1.211); the old behaviour stayed near chance (ln 3 = 1.10). Margin for the
    # different random streams of the two code bases (initialisation, shuffling).
    assert loss[-1] < YOLOV5_LOSS[-1] + 0.25 < OLD_FINAL, loss
    assert loss[-1] < 0.6 * loss[0], loss
    # YOLOv5's optimizer: Adam with betas (momentum, 0.999); decay on conv/linear weights only, none on BN and biases
    groups = {g["param_group"]: g for g in t.optimizer.param_groups}
    assert groups["weight"]["weight_decay"] == pytest.approx(5e-5) and groups["weight"]["betas"] == (0.9, 0.999)
    assert groups["bn"]["weight_decay"] == 0 and groups["bias"]["weight_decay"] == 0
    assert t.model.label_smoothing == pytest.approx(0.1)


def test_augment_option_selects_training_transform(small3, tmp_path):
    def train_tf(**kw):
        overrides = {"model": "models/cls/yolov5n-cls.yaml", "data": str(small3), "imgsz": 32, "batch": 32,
                     "save_dir": str(tmp_path / "run"), "plots": False, **kw.pop("o", {})}
        t = ClassifierTrainer(overrides=overrides, **kw)
        names = []
        for split in ("train", "val"):
            tf = t.build_dataset(str(small3 / split), mode=split).torch_transforms
            names.append([type(x).__name__ for x in tf.transforms])
        return names

    train, val = train_tf()  # YOLOv5's default: the evaluation transform
    assert train == val == ["Resize", "CenterCrop", "ToTensor", "Normalize"]
    train, _ = train_tf(o={"augment": True})  # --augment: the engine's RandomResizedCrop, flip, colour jitter
    assert train[0] == "RandomResizedCrop" and "ColorJitter" in train
    train, _ = train_tf(hyp="hyp.cifar100.yaml")  # bundled recipes keep their augmentation
    assert "RandomCrop" in train
    train, _ = train_tf(hyp="hyp.cifar100.yaml", o={"augment": False})  # the flag wins over the recipe
    assert train == val

    assert cls_train.engine_overrides(cls_train.parse_opt(["--augment"]))["augment"] is True
    assert cls_train.engine_overrides(cls_train.parse_opt(["--no-augment"]))["augment"] is False
    assert "augment" not in cls_train.engine_overrides(cls_train.parse_opt([]))
    assert load_cls_hyp(None)["augment"] is False
    assert all(load_cls_hyp(f)["augment"] for f in ("hyp.cifar100.yaml", "hyp.imagenet-mobilenetv2.yaml",
                                                    "hyp.shapes-cls.yaml"))
    f = tmp_path / "hyp.bad.yaml"
    f.write_text("augment: 1\n")
    with pytest.raises(HypError, match="'augment' must be true or false"):
        load_cls_hyp(f)
    with pytest.raises(ValueError, match="classes=5"):
        make_shapes_cls_dataset(tmp_path / "x", classes=5)
