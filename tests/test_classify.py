"""YOLOv5's classification workflow on the engine: a short CPU training on generated shapes-cls data reaches a real
accuracy; classify/val.py reproduces it with YOLOv5's table; predict, export (ONNX/OpenVINO) parity, recipe files,
the step schedule, CIFAR's crop, --cutoff from a detector, and clear errors."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

import classify.predict as cls_predict
import classify.train as cls_train
import classify.val as cls_val
from models.classify import ClassificationModel
from utils.checkpoint import load_checkpoint
from utils.clsdata import make_shapes_cls_dataset
from utils.engine import HypError
from utils.engine_cls import ClassifierTrainer, build_classifier, load_cls_hyp

ROOT = Path(__file__).resolve().parents[1]
EPOCHS = 6


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    return make_shapes_cls_dataset(tmp_path_factory.mktemp("data") / "shapes-cls", n_train=800, n_val=200, imgsz=64)


@pytest.fixture(scope="module")
def trained(shapes, tmp_path_factory):
    """The demo classifier (a small CNN with EMA) trained from scratch for a few epochs at 64x64 (demo recipe)."""
    project = tmp_path_factory.mktemp("runs")
    trainer = cls_train.run(["--data", str(shapes), "--model", "models/cls/cnn4-ema.yaml", "--hyp",
                             "hyp.shapes-cls.yaml", "--img", "64", "--epochs", str(EPOCHS), "--batch-size", "32",
                             "--project", str(project), "--noplots", "--cache", "ram"])
    return trainer


def test_short_training_reaches_accuracy_well_above_chance(trained):
    top1 = trained.metrics["metrics/accuracy_top1"]  # best.pt validated after training (4 classes: chance 0.25)
    assert top1 >= 0.6, f"top-1 {top1:.3f} after {EPOCHS} epochs"
    assert trained.save_dir.name == "exp" and (trained.save_dir / "results.csv").is_file()
    ckpt = load_checkpoint(trained.best)  # our restricted loader: no code runs
    assert isinstance(ckpt["model"], ClassificationModel) and ckpt["optimizer"] is None
    assert ckpt["model"].names == {0: "circle", 1: "rectangle", 2: "star", 3: "triangle"}
    assert ckpt["train_args"]["imgsz"] == 64


def test_val_cli_prints_yolov5_row_and_reproduces_training(trained, shapes, tmp_path, capsys):
    from ultralytics.utils import LOGGER

    lines = []
    LOGGER.addHandler(handler := _ListHandler(lines))
    try:
        stats = cls_val.run(data=str(shapes), weights=str(trained.best), project=tmp_path, verbose=True)[0]
    finally:
        LOGGER.removeHandler(handler)
    assert stats["metrics/accuracy_top1"] == pytest.approx(trained.metrics["metrics/accuracy_top1"], abs=1e-6)
    text = "\n".join(lines)
    assert re.search(r"^\s+all\s+200\s+0\.\d+\s+1\s*$", text, re.M), text  # image size 64 read from the checkpoint
    assert re.search(r"^\s+circle\s+50\s+", text, re.M)
    assert (tmp_path / "exp" / "confusion_matrix.png").is_file()


class _ListHandler(__import__("logging").Handler):
    def __init__(self, lines: list[str]):
        super().__init__()
        self.lines = lines

    def emit(self, record):
        self.lines.append(record.getMessage())


def test_predict_writes_top5_and_labels(trained, shapes, tmp_path):
    images = sorted((shapes / "val" / "star").glob("*.png"))[:2]
    results = cls_predict.run(weights=trained.best, source=images[0].parent, project=tmp_path, save_txt=True)
    assert len(results) == 50 and len(results[0].probs.top5) == 4 and abs(float(results[0].probs.data.sum()) - 1) < 1e-4
    save_dir = Path(results[0].save_dir)
    assert save_dir == tmp_path / "exp" and (save_dir / f"{images[0].stem}.jpg").is_file()
    label = (save_dir / "labels" / f"{images[0].stem}.txt").read_text().split()
    assert label[1] in {"circle", "rectangle", "star", "triangle"}
    stars = sum(r.names[r.probs.top1] == "star" for r in results)
    assert stars >= 25, f"only {stars}/50 stars recognised"


def test_export_onnx_openvino_parity(trained, shapes, tmp_path):
    import shutil

    import export

    w = tmp_path / "best.pt"
    shutil.copy(trained.best, w)
    res = export.run(weights=w, include=["onnx", "openvino"], imgsz=[64])
    for fmt in ("onnx", "openvino"):
        assert res[fmt]["max_abs_diff"] < 1e-4, (fmt, res[fmt]["max_abs_diff"])
    import onnx

    meta = {p.key: p.value for p in onnx.load(str(res["onnx"]["file"])).metadata_props}
    assert meta["task"] == "classify" and "star" in meta["names"]
    pt = cls_val.run(data=str(shapes), weights=str(w), project=tmp_path / "v", plots=False)[0]
    ox = cls_val.run(data=str(shapes), weights=str(res["onnx"]["file"]), imgsz=64, project=tmp_path / "v",
                     plots=False)[0]
    assert ox["metrics/accuracy_top1"] == pytest.approx(pt["metrics/accuracy_top1"], abs=0.011)
    with pytest.raises(export.ExportError, match="INT8 export of classifiers"):
        export.run(weights=w, include=["onnx"], imgsz=[64], int8=True)


def test_recipe_files_load_and_bad_keys_name_file(tmp_path):
    cifar = load_cls_hyp("hyp.cifar100.yaml")
    assert (cifar["optimizer"], cifar["lr0"], cifar["weight_decay"], cifar["schedule"]) == ("SGD", 0.1, 4e-5, "step")
    assert cifar["milestones"] == [0.3, 0.6, 0.8] and cifar["crop_padding"] == 4 and cifar["label_smoothing"] == 0
    mb = load_cls_hyp("hyp.imagenet-mobilenetv2.yaml")
    assert (mb["lr0"], mb["weight_decay"], mb["schedule"], mb["warmup_epochs"]) == (0.4, 1e-5, "cosine", 5)
    assert load_cls_hyp(None)["optimizer"] == "Adam" and load_cls_hyp(None)["label_smoothing"] == 0.1  # YOLOv5's
    f = tmp_path / "hyp.bad.yaml"
    for text, message in [("lr0: 0.1\nmosaic: 1.0\n", r"hyp.bad.yaml: unknown classification hyperparameter\(s\) "
                                                     "mosaic"),
                          ("schedule: exp\n", "'schedule' must be one of linear, cosine, step"),
                          ("milestones: [60, 120]\n", "'milestones' must be a list of fractions"),
                          ("lr0: fast\n", "'lr0' must be a number")]:
        f.write_text(text)
        with pytest.raises(HypError, match=message):
            load_cls_hyp(f)


def test_step_schedule_and_cifar_crop(shapes, tmp_path):
    t = ClassifierTrainer(overrides={"model": "models/cls/yolov5n-cls.yaml", "data": str(shapes), "epochs": 200,
                                     "imgsz": 32, "batch": 128, "save_dir": str(tmp_path / "run"), "plots": False},
                          hyp="hyp.cifar100.yaml")
    assert t.args.optimizer == "SGD" and t.args.lr0 == 0.1 and t.args.nbs == 128  # no accumulation, decay as given
    t.optimizer = torch.optim.SGD(t.model.parameters(), lr=0.1)
    t._setup_scheduler()
    assert [round(t.lf(e), 6) for e in (0, 59, 60, 119, 120, 160, 199)] == [1, 1, 0.2, 0.2, 0.04, 0.008, 0.008]
    tf = t.build_dataset(str(shapes / "train"), mode="train").torch_transforms
    crop = [x for x in tf.transforms if type(x).__name__ == "RandomCrop"]
    assert crop and crop[0].padding == 4 and crop[0].size == (32, 32)
    assert t.model.model[-1].linear.out_features == 4 and t.model.yaml["nc"] == 4


def test_classifier_from_detection_yaml_and_weights(tmp_path):
    from models.yolo import Model

    m = build_classifier("yolov5n.yaml", nc=4, cutoff=10, verbose=False)
    ref = ClassificationModel(ROOT / "models/cls/yolov5n-cls.yaml", nc=4, verbose=False)
    assert sum(p.numel() for p in m.parameters()) == sum(p.numel() for p in ref.parameters())
    torch.manual_seed(1)
    det = Model(ROOT / "models/yolov5n.yaml", verbose=False)
    torch.save({"model": det, "ema": None}, tmp_path / "det.pt")
    m = build_classifier(tmp_path / "det.pt", nc=4, verbose=False)  # YOLOv5: --model yolov5n.pt keeps the backbone
    assert torch.equal(m.model[8].cv1.conv.weight, det.model[8].cv1.conv.weight)
    with pytest.raises(ValueError, match="--cutoff 9: .*is a classification YAML"):
        build_classifier("models/cls/yolov5n-cls.yaml", nc=4, cutoff=9)


def test_demo_defaults_and_bad_input(tmp_path, capsys):
    opt = cls_train.parse_opt([])
    o = cls_train.engine_overrides(opt)
    assert (o["data"], o["model"], o["imgsz"], o["batch"]) == ("shapes-cls", "models/cls/cnn4-ema.yaml", 64, 32)
    opt = cls_train.parse_opt(["--data", "cifar100", "--lr0", "0.05"])
    o = cls_train.engine_overrides(opt)
    assert (o["imgsz"], o["epochs"], o["lr0"]) == (224, 10, 0.05) and "optimizer" not in o  # the recipe decides
    with pytest.raises(SystemExit):
        cls_train.main(["--data", "mnist3", "--project", str(tmp_path)])
    assert "not a known dataset name" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cls_val.main(["--weights", str(tmp_path / "none.pt"), "--data", "shapes-cls"])
    assert "none.pt" in capsys.readouterr().err
