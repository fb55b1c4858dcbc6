"""YOLOv5's remaining command-line options (issue 21): ensembles, --save-json's name, the per-class table,
--save-hybrid, --task study, --save-csv, ? and [] globs, --source screen, --image-weights, --quad, --local-rank and the
W&B options."""

from __future__ import annotations

import csv
from copy import deepcopy
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml

import detect
import train
import val
from models.experimental import Ensemble
from models.yolo import Model
from tests.helpers import SHAPES_NAMES, shapes_data

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")
ROOT = Path(__file__).resolve().parents[1]


def tiny_model(seed: int, nc: int = 4, names: dict | None = None) -> Model:
    """yolov5n at an eighth of its width, random weights biased towards confident boxes (the preferred class depends
    on ``seed``), BatchNorm statistics set from one batch so that features do not fade."""
    cfg = yaml.safe_load((ROOT / "models" / "yolov5n.yaml").read_text())
    cfg.update(nc=nc, width_multiple=0.125)
    torch.manual_seed(seed)
    model = Model(cfg, verbose=False)
    det = model.model[-1]
    for conv in det.m:  # small head weights: well-formed boxes near the anchors, scores near the biases' values
        conv.weight.data *= 0.002
        b = conv.bias.data.view(det.na, -1)
        b[:, 4] = 1.0
        b[:, 5:] = torch.linspace(1.5, -1.5, nc) * (1 if seed % 2 == 0 else -1)
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


def test_task_speed_benchmarks_each_weights_on_its_own(assets, tmp_path):
    rows = val.run(weights=[str(assets["a"]), str(assets["b"])], data=str(assets["data"]), imgsz=64, batch_size=4,
                   workers=0, project=tmp_path, task="speed", save_json=True)
    assert len(rows) == 2 and all(r["speed"]["inference"] > 0 for r in rows)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp", "exp2"]
    assert not list(tmp_path.rglob("*.json")) and not list(tmp_path.rglob("*.png"))  # no json, no plots


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


# ----- detect.py -----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def images(assets) -> Path:
    src = assets["dir"] / "src"
    src.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    for name in ("img1.png", "img2.png", "img3.png", "imgA.png", "other.png"):
        im = rng.integers(0, 255, (64, 80, 3), dtype=np.uint8)
        cv2.rectangle(im, (10, 10), (40, 50), (0, 0, 255), -1)
        cv2.imwrite(str(src / name), im)
    return src


def test_save_csv_rows_match_detections(assets, images, tmp_path):
    out = detect.run(weights=str(assets["a"]), source=str(images / "img1.png"), imgsz=[64], conf_thres=0.3,
                     max_det=5, save_csv=True, save_txt=True, save_conf=True, nosave=True, project=tmp_path)
    with open(out / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    labels = [r.split() for r in (out / "labels" / "img1.txt").read_text().splitlines()]
    assert rows and len(rows) == len(labels) <= 5
    assert list(rows[0]) == ["Image Name", "Prediction", "Confidence"]
    assert {r["Image Name"] for r in rows} == {"img1.png"}
    got = sorted((r["Prediction"], r["Confidence"]) for r in rows)
    want = sorted((SHAPES_NAMES[int(c)], f"{float(conf):.2f}") for c, *_, conf in labels)
    assert got == want
    assert detect.parse_opt(["--save-csv"]).save_csv


@pytest.mark.parametrize("pattern, names", [("img?.png", ["img1.png", "img2.png", "img3.png", "imgA.png"]),
                                            ("img[12].png", ["img1.png", "img2.png"]),
                                            ("img[!0-9].png", ["imgA.png"])])
def test_glob_question_mark_and_brackets(images, pattern, names):
    files = detect.check_source(str(images / pattern))
    assert [Path(f).name for f in files] == names
    loader = detect.open_source(str(images / pattern), entries=files)
    assert sorted(Path(p[0]).name for p, _, _ in loader) == names


def test_glob_matching_nothing(images, tmp_path, cli_error):
    err = cli_error(detect.main, ["--weights", "x.pt", "--source", str(images / "zz?.png"), "--project", str(tmp_path)])
    assert "the pattern matches no files" in err


def test_detect_ensemble_finds_both_models_boxes(assets, images, tmp_path):
    opts = {"source": str(images / "img1.png"), "imgsz": [64], "conf_thres": 0.3, "iou_thres": 0.45, "max_det": 300,
            "save_txt": True, "save_conf": True, "nosave": True}
    counts = {}
    for key, w in (("a", [str(assets["a"])]), ("b", [str(assets["b"])]), ("ab", [str(assets["a"]), str(assets["b"])]),
                   ("aa", [str(assets["a"]), str(assets["a"])])):
        out = detect.run(weights=w, project=tmp_path, name=key, **opts)
        counts[key] = sorted((out / "labels" / "img1.txt").read_text().splitlines())
    assert counts["aa"] == counts["a"]  # two copies: NMS keeps one of each pair
    assert counts["ab"] != counts["a"] and counts["ab"] != counts["b"]
    assert detect.parse_opt(["--weights", "a.pt", "b.pt"]).weights == ["a.pt", "b.pt"]


def test_detect_ensemble_refuses_exports(assets, images, tmp_path, cli_error):
    err = cli_error(detect.main, ["--weights", str(assets["a"]), str(tmp_path / "b.onnx"), "--source", str(images),
                                  "--project", str(tmp_path)])
    assert err.count("ERROR:") == 1 and ".pt checkpoints only" in err


def test_source_screen_without_mss(images, tmp_path, cli_error, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "mss", None)  # as when mss is not installed
    err = cli_error(detect.main, ["--weights", "x.pt", "--source", "screen", "--project", str(tmp_path)])
    assert err.count("ERROR:") == 1 and "mss" in err and "not installed" in err


# ----- train.py ------------------------------------------------------------------------------------------------------
def test_image_weights_favour_rare_class_images():
    from utils.train_options import ImageWeightSampler, epoch_weights

    labels = [np.array([0.0, 0.0])] * 8 + [np.array([1.0])] + [np.array([])]  # class 1 is rare, image 9 unlabelled
    w = epoch_weights(labels, nc=2)
    assert w[8] > 3 * w[0] and w[9] == 0
    sampler = ImageWeightSampler(w, seed=0)
    draws = np.bincount([i for _ in range(200) for i in sampler], minlength=10)  # 200 epochs of 10 draws
    assert draws[8] > 3 * draws[0] and draws[9] == 0  # the one rare-class image is drawn most
    # a class the model already detects well (mAP 0.9) loses weight, as YOLOv5's (1 - mAP)^2
    w2 = epoch_weights(labels, nc=2, maps=np.array([0.0, 0.9]))
    assert w2[8] < w2[0]


def test_quad_batch_tiles_or_upsamples():
    from utils.train_options import quad_batch

    img = torch.stack([torch.full((3, 8, 8), float(i)) for i in range(4)])
    batch = {"img": img, "batch_idx": torch.tensor([0.0, 1.0, 2.0, 3.0]), "cls": torch.zeros(4, 1),
             "bboxes": torch.tensor([[0.5, 0.5, 0.2, 0.2]] * 4), "im_file": ["a", "b", "c", "d"],
             "resized_shape": [(8, 8)] * 4}

    class Always:
        def __init__(self, v):
            self.v = v

        def random(self):
            return self.v

    tiled = quad_batch(batch, Always(0.9))
    assert tiled["img"].shape == (1, 3, 16, 16) and tiled["im_file"] == ["a"]
    assert tiled["img"][0, 0, 0, 0] == 0 and tiled["img"][0, 0, 15, 0] == 1 and tiled["img"][0, 0, 0, 15] == 2
    assert tiled["img"][0, 0, 15, 15] == 3
    assert torch.allclose(tiled["bboxes"], torch.tensor([[0.25, 0.25, 0.1, 0.1], [0.25, 0.75, 0.1, 0.1],
                                                         [0.75, 0.25, 0.1, 0.1], [0.75, 0.75, 0.1, 0.1]]))
    assert tiled["batch_idx"].tolist() == [0, 0, 0, 0]
    up = quad_batch(batch, Always(0.1))
    assert up["img"].shape == (1, 3, 16, 16) and torch.equal(up["bboxes"], batch["bboxes"][:1])
    small = {**batch, "img": img[:3]}
    assert quad_batch(small) is small  # fewer than 4 images: unchanged


def test_train_with_image_weights_and_quad(assets, tmp_path, log_records, monkeypatch):
    from utils import train_options

    shapes, quad = [], train_options.quad_batch
    monkeypatch.setattr(train_options, "quad_batch", lambda b: shapes.append(tuple(quad(b)["img"].shape)) or quad(b))
    argv = ["--data", str(assets["data"]), "--cfg", "models/yolov5n.yaml", "--hyp", "data/hyps/hyp.shapes.yaml",
            "--imgsz", "64", "--batch-size", "4", "--epochs", "1", "--workers", "0", "--noplots", "--noautoanchor",
            "--project", str(tmp_path), "--image-weights", "--quad", "--entity", "me", "--bbox_interval", "2"]
    trainer = train.run(**vars(train.parse_opt(argv)))
    from utils.train_options import ImageWeightSampler, QuadCollate

    assert isinstance(trainer.train_loader.batch_sampler.sampler.sampler, ImageWeightSampler)
    assert isinstance(trainer.train_loader.collate_fn, QuadCollate)
    assert shapes and all(s[0] == 1 and s[2:] == (128, 128) for s in shapes)  # batches of 4 images at 64 -> 1 at 128
    assert (Path(trainer.save_dir) / "weights" / "last.pt").is_file()
    notes = [m for _, m in log_records if "--bbox_interval, --entity" in m]
    assert len(notes) == 1 and "W&B" in notes[0]


def test_image_weights_refuse_ddp(assets, tmp_path, cli_error, monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    err = cli_error(train.main, ["--data", str(assets["data"]), "--image-weights", "--project", str(tmp_path)])
    assert "--image-weights argument is not compatible with DDP training" in err


@pytest.mark.parametrize("argv", [["--local-rank=1"], ["--local_rank", "1"]])
def test_local_rank_sets_local_rank_env(argv, monkeypatch):
    import os

    monkeypatch.setenv("LOCAL_RANK", "0")  # recorded, so that teardown removes what the test sets
    monkeypatch.delenv("LOCAL_RANK")
    opt = train.parse_opt(argv)
    assert opt.local_rank == 1
    train.local_rank_to_env(opt)
    assert os.environ["LOCAL_RANK"] == "1"
    monkeypatch.setenv("LOCAL_RANK", "3")  # the launcher's own variable wins
    train.local_rank_to_env(opt)
    assert os.environ["LOCAL_RANK"] == "3"


def test_wandb_options_parse_and_say_what_they_do(monkeypatch):
    import sys

    from utils.train_options import wandb_note

    opt = train.parse_opt(["--bbox_interval", "5", "--entity", "team", "--upload_dataset", "--artifact_alias", "v2"])
    assert (opt.bbox_interval, opt.entity, opt.upload_dataset, opt.artifact_alias) == (5, "team", True, "v2")
    assert train.parse_opt(["--upload_dataset", "val"]).upload_dataset == "val"
    monkeypatch.setitem(sys.modules, "wandb", None)
    note = wandb_note(opt)
    assert "\n" not in note and "not used" in note and "wandb is not installed" in note
    assert all(f"--{k}" in note for k in ("bbox_interval", "entity", "upload_dataset", "artifact_alias"))
    assert wandb_note(train.parse_opt([])) is None


def test_yolov5_v7_options_are_accepted_and_say_what_they_do(capsys, tmp_path, log_records):
    from utils.train_options import unused_evolve_note

    opt = train.parse_opt(["--evolve_population", "pop", "--resume_evolve", "e.csv", "--bucket", "b",
                           "--ndjson-console", "--ndjson-file"])
    assert opt.ndjson_console and opt.ndjson_file
    note = unused_evolve_note(opt)
    assert "\n" not in note and "not used" in note
    assert all(f"--{k}" in note for k in ("evolve_population", "resume_evolve", "bucket"))
    assert unused_evolve_note(train.parse_opt([])) is None

    assert val.parse_opt(["--dnn"]).dnn and detect.parse_opt(["--dnn", "--update"]).update
    with pytest.raises(SystemExit):  # past the option, the run fails on the missing weights
        detect.main(["--dnn", "--update", "--weights", str(tmp_path / "none.pt"), "--source", str(tmp_path)])
    logged = " ".join(message for _, message in log_records)
    assert "--dnn: not used" in logged and "--update: nothing to do" in logged


def test_detect_data_names_replace_placeholders_only(tmp_path):
    f = tmp_path / "d.yaml"
    f.write_text("names: [cat, dog]\n")
    assert detect.names_for({0: "class0", 1: "class1"}, str(f)) == {0: "cat", 1: "dog"}
    assert detect.names_for({0: "a", 1: "b"}, str(f)) == {0: "a", 1: "b"}  # weights' own names win
    with pytest.raises(ValueError, match="2 class names, but the weights predict 3"):
        detect.names_for({i: f"class{i}" for i in range(3)}, str(f))
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        detect.names_for({0: "class0"}, str(tmp_path / "missing.yaml"))
