"""YOLOv5's results.csv (names, order, padding, epochs from 0), results.png and TensorBoard scalars, for detection
training, its resume, and classifier training."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch
import yaml

import train
from tests.helpers import shapes_data
from utils.engine import YOLOv5Trainer, load_hyp
from utils.results import ResultsLog, read_results

ROOT = Path(__file__).resolve().parents[1]
YOLOV5_COLUMNS = ["epoch", "train/box_loss", "train/obj_loss", "train/cls_loss", "metrics/precision",
                  "metrics/recall", "metrics/mAP_0.5", "metrics/mAP_0.5:0.95", "val/box_loss", "val/obj_loss",
                  "val/cls_loss", "x/lr0", "x/lr1", "x/lr2"]
YOLOV5_CLS_COLUMNS = ["epoch", "train/loss", "val/loss", "metrics/accuracy_top1", "metrics/accuracy_top5", "lr/0"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("csv-data")
    shapes_data(root, n_train=16, n_val=8, imgsz=64)
    return root


def trainer_for(tiny: Path, project: Path, *extra: str) -> YOLOv5Trainer:
    opt = train.parse_opt(["--data", str(tiny / "shapes.yaml"), "--hyp", "data/hyps/hyp.shapes.yaml", "--cfg",
                           "models/yolov5n.yaml", "--imgsz", "64", "--batch-size", "8", "--epochs", "2",
                           "--workers", "0", "--project", str(project), *extra])
    from models.yolo import resolve_cfg

    return YOLOv5Trainer(overrides=train.engine_overrides(opt, str(resolve_cfg(opt.cfg))), hyp=load_hyp(opt.hyp))


@pytest.fixture(scope="module")
def run(tiny, tmp_path_factory):
    """Two epochs of yolov5n at 64 px; the optimizer's learning rates by group name as each epoch ends."""
    t = trainer_for(tiny, tmp_path_factory.mktemp("runs"))
    train.add_batch_options(t, train.parse_opt(["--ndjson-file"]))  # how train.py hands its flags to the trainer
    lrs = []
    t.add_callback("on_train_epoch_end", lambda tr: lrs.append({g["param_group"]: g["lr"]
                                                                for g in tr.optimizer.param_groups}))
    t.train()
    return Path(t.save_dir), lrs


def test_results_csv_has_yolov5_columns_and_format(run):
    save_dir, lrs = run
    text = (save_dir / "results.csv").read_text()
    lines = text.splitlines()
    header = lines[0].split(",")
    assert [h.strip() for h in header] == YOLOV5_COLUMNS
    assert all(len(h) == 20 for h in header)  # YOLOv5 pads every field to 20 characters
    assert all(len(f) == 20 for line in lines[1:] for f in line.split(","))
    data = read_results(save_dir / "results.csv")
    assert data["epoch"] == [0.0, 1.0] and len(lines) == 3  # one row per epoch, counted from 0 as YOLOv5 does
    assert all(math.isfinite(v) for k in YOLOV5_COLUMNS for v in data[k])
    assert all(v > 0 for k in ("train/box_loss", "train/obj_loss", "val/obj_loss") for v in data[k])
    for i, groups in enumerate(lrs):  # x/lr0..2: YOLOv5 v6.0's groups (BatchNorm weights, weights, biases)
        assert data["x/lr0"][i] == pytest.approx(groups["bn"], rel=1e-4)
        assert data["x/lr1"][i] == pytest.approx(groups["weight"], rel=1e-4)
        assert data["x/lr2"][i] == pytest.approx(groups["bias"], rel=1e-4)
    assert data["x/lr2"][0] > data["x/lr1"][0]  # epoch 0 is warmup: the bias rate falls from warmup_bias_lr
    assert (save_dir / "results.png").stat().st_size > 10_000
    ckpt = torch.load(save_dir / "weights/last.pt", weights_only=False)
    assert ckpt["train_results"]["metrics/mAP_0.5"] == data["metrics/mAP_0.5"]  # stored under YOLOv5's names


def test_ndjson_file_holds_the_csv_rows(run):
    import json

    save_dir, _ = run
    rows = [json.loads(line) for line in (save_dir / "results.ndjson").read_text().splitlines()]
    data = read_results(save_dir / "results.csv")
    assert [r["epoch"] for r in rows] == [0, 1] and list(rows[0]) == YOLOV5_COLUMNS
    for k in YOLOV5_COLUMNS[1:]:
        assert [r[k] for r in rows] == pytest.approx(data[k], rel=1e-4)  # the csv rounds to 5 significant digits


def test_pandas_reads_it_as_yolov5_users_do(run):
    pd = pytest.importorskip("pandas")
    data = pd.read_csv(run[0] / "results.csv")
    data.columns = [x.strip() for x in data.columns]
    assert list(data.columns) == YOLOV5_COLUMNS and data["epoch"].tolist() == [0, 1]
    assert all(data[c].dtype.kind in "if" for c in YOLOV5_COLUMNS)  # numbers, as in YOLOv5 ("0" for a zero mAP)


def test_tensorboard_events_hold_yolov5_scalars(run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    save_dir = run[0]
    assert list(save_dir.glob("events.out.tfevents.*")), "TensorBoard events in the run folder"
    events = EventAccumulator(str(save_dir))
    events.Reload()
    assert sorted(events.Tags()["scalars"]) == sorted(YOLOV5_COLUMNS[1:])  # no engine names (lr/pg0, (B))
    data = read_results(save_dir / "results.csv")
    for tag in ("metrics/mAP_0.5", "train/box_loss", "x/lr2"):
        scalars = events.Scalars(tag)
        assert [s.step for s in scalars] == [0, 1]
        assert [s.value for s in scalars] == pytest.approx(data[tag], rel=1e-4)


def test_resume_appends_rows_under_the_same_header(tiny, tmp_path):
    t = trainer_for(tiny, tmp_path, "--noplots")

    class Interrupt(Exception):
        pass

    def stop(trainer):
        raise Interrupt

    t.add_callback("on_model_save", stop)
    with pytest.raises(Interrupt):
        t.train()
    csv = Path(t.save_dir) / "results.csv"
    first = csv.read_text().splitlines()
    assert len(first) == 2
    train.run(resume=str(Path(t.save_dir) / "weights/last.pt"))
    rows = csv.read_text().splitlines()
    assert rows[:2] == first and len(rows) == 3  # one header, epoch 0 kept, epoch 1 appended
    assert read_results(csv)["epoch"] == [0.0, 1.0]
    assert not (csv.parent / "results.engine.csv").exists()


class Bare(ResultsLog):
    """Just what save_metrics reads of a trainer."""

    def __init__(self, save_dir: Path):
        self.save_dir, self.csv, self.epoch, self.callbacks = save_dir, save_dir / "results.csv", 0, {}
        self.optimizer = torch.optim.SGD([{"params": [torch.zeros(1)], "param_group": g} for g in
                                          ("weight", "bn", "bias")], lr=0.01)

    def add_callback(self, event, fn):
        self.callbacks.setdefault(event, []).append(fn)


def test_missing_tensorboard_warns_once_and_trains_on(tmp_path, monkeypatch, log_records):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails as if not installed
    t = Bare(tmp_path)
    for t.epoch in range(3):
        t.save_metrics({"train/box_loss": 0.1})
    warnings = [m for level, m in log_records if level == "warning" and "TensorBoard" in m]
    assert len(warnings) == 1 and "pip install tensorboard" in warnings[0]
    assert read_results(t.csv)["epoch"] == [0.0, 1.0, 2.0] and not list(tmp_path.glob("events.*"))
    assert math.isnan(read_results(t.csv)["metrics/mAP_0.5"][0])  # a value the engine did not give


def test_csv_with_engine_columns_is_kept_aside(tmp_path):
    (tmp_path / "results.csv").write_text("epoch,time,train/box_loss,metrics/mAP50(B)\n1,3.2,0.1,0.2\n")
    t = Bare(tmp_path)
    t.tensorboard = False
    t.save_metrics({"train/box_loss": 0.1})
    assert (tmp_path / "results.engine.csv").read_text().startswith("epoch,time,")
    assert list(read_results(t.csv)) == YOLOV5_COLUMNS


def test_classifier_csv_has_yolov5_classify_columns(tmp_path):
    import classify.train as cls_train
    from utils.clsdata import make_shapes_cls_dataset

    data = make_shapes_cls_dataset(tmp_path / "shapes-cls", n_train=32, n_val=16, imgsz=32)
    t = cls_train.run(["--data", str(data), "--model", "models/cls/cnn4-ema.yaml", "--hyp", "hyp.shapes-cls.yaml",
                       "--img", "32", "--epochs", "2", "--batch-size", "16", "--project", str(tmp_path / "runs")])
    lines = (t.save_dir / "results.csv").read_text().splitlines()
    assert [h.strip() for h in lines[0].split(",")] == YOLOV5_CLS_COLUMNS
    assert all(len(h) == 23 for h in lines[0].split(","))  # YOLOv5's classifier pads to 23
    res = read_results(t.save_dir / "results.csv")
    assert res["epoch"] == [0.0, 1.0] and all(math.isfinite(v) for k in YOLOV5_CLS_COLUMNS for v in res[k])
    assert (t.save_dir / "results.png").is_file() and list(t.save_dir.glob("events.out.tfevents.*"))
    assert yaml.safe_load((t.save_dir / "args.yaml").read_text())["epochs"] == 2
