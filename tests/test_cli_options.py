"""YOLOv5's remaining command-line options (issue 21): ensembles, --save-json's name, the per-class table,
--save-hybrid, --task study, --save-csv, ? and [] globs, --source screen, --image-weights, --quad, --local-rank and the
W&B options."""

from __future__ import annotations

from copy import deepcopy
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import val
from models.experimental import Ensemble
from models.yolo import Model
from tests.helpers import SHAPES_NAMES, shapes_data

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")
ROOT = Path(__file__).resolve().parents[1]


def tiny_model(seed: int, nc: int = 4, names: dict | None = None) -> Model:
    """yolov5n at a quarter of its width, random weights biased towards confident boxes, BatchNorm statistics set from
    one batch so that features do not fade."""
    cfg = yaml.safe_load((ROOT / "models" / "yolov5n.yaml").read_text())
    cfg.update(nc=nc, width_multiple=0.125)
    torch.manual_seed(seed)
    model = Model(cfg, verbose=False)
    det = model.model[-1]
    for conv in det.m:
        conv.bias.data.view(det.na, -1)[:, 4] = 1.0
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = 1.0
    model.train()
    with torch.no_grad():
        model(torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(seed)))
    model.names = dict(names or SHAPES_NAMES)
    return model.eval()


def save_weights(model: Model, f: Path) -> Path:
    torch.save({"epoch": 0, "best_fitness": None, "model": None, "ema": deepcopy(model).half(), "optimizer": None,
                "train_args": {}, "date": "2026-11-01", "version": "8.4.190"}, f)
    return f


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> dict:
    d = tmp_path_factory.mktemp("opts")
    data = shapes_data(d, n_train=8, n_val=6, imgsz=64)
    a = save_weights(tiny_model(0), d / "a.pt")
    b = save_weights(tiny_model(1), d / "b.pt")
    return {"dir": d, "data": data, "a": a, "b": b}


# ----- ensembles ---------------------------------------------------------------------------------------------------
def test_ensemble_output_is_members_concatenated():
    m1, m2 = tiny_model(0), tiny_model(1)
    x = torch.rand(2, 3, 64, 96)
    with torch.no_grad():
        y, raw = Ensemble([m1, m2])(x)
        y1, y2 = m1(x)[0], m2(x)[0]
    assert y.shape == (2, 4 + 4, y1.shape[2] + y2.shape[2])
    assert torch.equal(y, torch.cat((y1, y2), 2)) and len(raw) == 2
    e = Ensemble([m1, m2])
    assert e.names == SHAPES_NAMES and int(e.stride.max()) == 32


def test_ensemble_refuses_other_classes():
    with pytest.raises(ValueError, match="different numbers of classes"):
        Ensemble([tiny_model(0), tiny_model(1, nc=3, names={0: "a", 1: "b", 2: "c"})])


def test_val_ensemble_of_two_copies_equals_one(assets, tmp_path, log_records):
    common = {"data": str(assets["data"]), "imgsz": 64, "batch_size": 4, "workers": 0, "plots": False,
              "project": tmp_path}
    (one,) = val.run(weights=[str(assets["a"])], save_json=True, **common)
    (two,) = val.run(weights=[str(assets["a"]), str(assets["a"])], **common)
    for k in ("metrics/mAP50(B)", "metrics/mAP50-95(B)"):
        assert two[k] == pytest.approx(one[k], abs=1e-6)
    assert any("Ensemble created with" in m for _, m in log_records)
    # --save-json: YOLOv5's name, after the weights
    assert (tmp_path / "exp" / "a_predictions.json").is_file() and not (tmp_path / "exp" / "predictions.json").exists()
    # the per-class table is printed without --verbose below 50 classes
    lines = [m for _, m in log_records if m.split()[:1] and m.split()[0] in SHAPES_NAMES.values()]
    assert len(lines) >= 2


def test_val_ensemble_refuses_exports(assets, tmp_path, cli_error):
    onnx = tmp_path / "a.onnx"
    onnx.write_bytes(b"x")
    err = cli_error(val.main, ["--weights", str(assets["a"]), str(onnx), "--data", str(assets["data"]),
                               "--project", str(tmp_path)])
    assert err.count("ERROR:") == 1 and ".pt checkpoints only" in err


def test_save_hybrid_adds_ground_truth_to_labels(assets, tmp_path):
    (stats,) = val.run(weights=[str(assets["a"])], data=str(assets["data"]), imgsz=64, batch_size=4, workers=0,
                       plots=False, project=tmp_path, save_hybrid=True, save_conf=True)
    labels = sorted((tmp_path / "exp" / "labels").glob("*.txt"))
    gt = sorted((assets["dir"] / "shapes" / "labels" / "val").glob("*.txt"))
    assert [f.name for f in labels] == [f.name for f in gt if f.read_text().strip()]
    for f in labels:  # every ground-truth box is in the hybrid file at confidence 1
        rows = [list(map(float, r.split())) for r in f.read_text().splitlines()]
        truth = [list(map(float, r.split())) for r in (assets["dir"] / "shapes/labels/val" / f.name).read_text()
                 .splitlines()]
        for t in truth:
            assert any(r[0] == t[0] and r[5] == 1.0 and np.allclose(r[1:5], t[1:5], atol=0.02) for r in rows)
    (plain,) = val.run(weights=[str(assets["a"])], data=str(assets["data"]), imgsz=64, batch_size=4, workers=0,
                       plots=False, project=tmp_path)
    assert stats["metrics/recall(B)"] == 1.0  # hybrid labels hold the ground truth (YOLOv5 warns about the mAP)
    assert stats["metrics/mAP50(B)"] > plain["metrics/mAP50(B)"]


def test_task_study_writes_rows_and_plot(assets, tmp_path):
    rows = val.run(weights=[str(assets["a"])], data=str(assets["data"]), batch_size=4, workers=0, project=tmp_path,
                   task="study", study_sizes=(64, 96))
    assert [r["imgsz"] for r in rows] == [64, 96]
    out = tmp_path / "exp"
    table = np.loadtxt(out / f"study_{assets['data'].stem}_a.txt")
    assert table.shape == (2, 10)
    assert table[:, 3] == pytest.approx([r["metrics/mAP50-95(B)"] for r in rows], abs=1e-3)
    assert (out / "study.png").is_file() and (out / "study.zip").is_file()
    assert val.parse_opt(["--task", "study"]).task == "study"
    from utils.validation import STUDY_SIZES

    assert STUDY_SIZES == tuple(range(256, 1537, 128))
