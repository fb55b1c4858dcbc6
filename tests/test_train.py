"""Training and validation through the engine: hyps, end-to-end mAP, resume, atomic checkpoints, bad input."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
import yaml

import train
import val
from tests.helpers import shapes_data
from utils.engine import HypError, YOLOv5Trainer, load_hyp, split_hyp

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    """A small shapes dataset and its data YAML (absolute paths, so nothing is written into the repo)."""
    return shapes_data(tmp_path_factory.mktemp("data"), n_train=160, n_val=48, imgsz=128)


# Short-run recipe: no gradient accumulation and a short warmup, so a few epochs make real progress on CPU.
FAST = ["--imgsz", "128", "--batch-size", "16", "--cfg", "models/yolov5n.yaml", "--hyp", "data/hyps/hyp.shapes.yaml"]


def test_hyp_files_split_between_engine_and_loss():
    hyp = load_hyp("data/hyps/hyp.scratch-low.yaml")
    engine, loss = split_hyp(hyp)
    assert engine["lr0"] == 0.01 and engine["mosaic"] == 1.0 and "obj" not in engine and "anchor_t" not in engine
    assert loss == {"box": 0.05, "cls": 0.5, "cls_pw": 1.0, "obj": 1.0, "obj_pw": 1.0, "iou_t": 0.2, "anchor_t": 4.0,
                    "fl_gamma": 0.0}
    vis = load_hyp("hyp.VisDrone.yaml")  # found by bare name in data/hyps
    assert vis["anchor_t"] == 3.0 and vis["lr0"] == 0.0003 and vis["mixup"] == 0.2


def test_bad_hyp_names_file_and_key(tmp_path):
    f = tmp_path / "hyp.bad.yaml"
    f.write_text("lr0: 0.01\nobjj: 1.0\n")
    with pytest.raises(HypError, match=r"hyp.bad.yaml: unknown hyperparameter\(s\) objj"):
        load_hyp(f)
    f.write_text("lr0: fast\n")
    with pytest.raises(HypError, match="'lr0' must be a number"):
        load_hyp(f)


def test_defaults_reproduce_yolov5_not_engine(shapes, tmp_path):
    t = YOLOv5Trainer(overrides={"model": str(ROOT / "models/yolov5n.yaml"), "data": str(shapes), "epochs": 3,
                                 "imgsz": 128, "save_dir": str(tmp_path / "run")})
    assert t.args.optimizer == "SGD" and t.args.close_mosaic == 0 and t.args.cls_pw == 0.0 and t.args.iou == 0.6
    assert t.args.lr0 == 0.01 and t.args.momentum == 0.937 and t.args.warmup_bias_lr == 0.1
    hyp = t.model.hyp  # loss gains scaled once for 3 levels, 4 classes, 128 px
    assert hyp["box"] == pytest.approx(0.05) and hyp["cls"] == pytest.approx(0.5 * 4 / 80)
    assert hyp["obj"] == pytest.approx((128 / 640) ** 2) and hyp["anchor_t"] == 4.0
    assert t.model.nc == 4 and t.model.model[-1].nc == 4  # nc from the data overrides the YAML's 80
    assert t._get_warmup_iterations(10) == 20  # max(3 epochs, 100 its) capped to leave the last epoch
    assert t._get_warmup_iterations(50) == 100


@pytest.fixture(scope="module")
def trained(shapes, tmp_path_factory):
    project = tmp_path_factory.mktemp("runs")
    argv = FAST + ["--data", str(shapes), "--epochs", "25", "--project", str(project), "--name", "exp"]
    trainer = train.run(**vars(train.parse_opt(argv)))
    return trainer


def test_short_training_reaches_map(trained):
    save_dir = Path(trained.save_dir)
    assert save_dir.name == "exp"
    for f in ("weights/last.pt", "weights/best.pt", "results.csv", "results.png", "labels.jpg",
              "train_batch0.jpg", "confusion_matrix.png", "BoxPR_curve.png", "args.yaml"):
        assert (save_dir / f).exists(), f
    header = (save_dir / "results.csv").read_text().splitlines()[0]
    assert "train/box_loss" in header and "train/obj_loss" in header and "train/cls_loss" in header
    # 25 epochs of yolov5n from scratch on 160 images (~1 min): measured mAP@.5 0.126; an untrained model scores ~0.0003
    assert trained.metrics["metrics/mAP50(B)"] > 0.06, trained.metrics
    ckpt = torch.load(save_dir / "weights/best.pt", weights_only=False)
    model = ckpt["ema"] or ckpt["model"]  # the final strip moves the EMA weights to 'model'
    assert model.model[-1].anchors.shape == (3, 3, 2)  # the anchors used travel with the checkpoint
    assert model.hyp["anchor_t"] == 4.0


def test_val_cli_reproduces_training_map(trained, shapes, tmp_path):
    best = Path(trained.save_dir) / "weights/best.pt"
    (stats,) = val.run(data=str(shapes), weights=[str(best)], imgsz=128, batch_size=16, project=tmp_path, save_txt=True,
                       save_conf=True, save_json=True, verbose=True)
    assert stats["metrics/mAP50(B)"] == pytest.approx(trained.metrics["metrics/mAP50(B)"], abs=0.02)
    assert stats["metrics/pycocotools_mAP50(B)"] == pytest.approx(stats["metrics/mAP50(B)"], abs=0.05)
    out = tmp_path / "exp"
    assert (out / "best_predictions.json").exists()  # YOLOv5's name: <weights stem>_predictions.json
    rows = [line.split() for f in (out / "labels").glob("*.txt") for line in f.read_text().splitlines()]
    assert rows and all(len(r) == 6 for r in rows)  # class x y w h conf


def test_run_dirs_increment_like_yolov5(trained, shapes):
    project = Path(trained.save_dir).parent
    second = train.engine_overrides(train.parse_opt(["--data", str(shapes), "--project", str(project)]), "x.yaml")
    assert Path(second["save_dir"]).name == "exp2"


def test_resume_continues_interrupted_run(shapes, tmp_path):
    """Interrupt after epoch 1 of 2, resume: epoch 2 runs with the saved optimizer/EMA state, not from scratch."""
    args = FAST + ["--data", str(shapes), "--epochs", "2", "--project", str(tmp_path), "--noplots"]

    class Interrupt(Exception):
        pass

    def stop_after_first_epoch(trainer):
        raise Interrupt

    opt = train.parse_opt(args)
    from models.yolo import resolve_cfg

    t = YOLOv5Trainer(overrides=train.engine_overrides(opt, str(resolve_cfg(opt.cfg))), hyp=load_hyp(opt.hyp))
    t.add_callback("on_model_save", stop_after_first_epoch)
    with pytest.raises(Interrupt):
        t.train()
    last = Path(t.save_dir) / "weights/last.pt"
    first = torch.load(last, weights_only=False)
    assert first["epoch"] == 0 and first["optimizer"] is not None

    resumed = train.run(resume=str(last))
    assert Path(resumed.save_dir) == Path(t.save_dir) and resumed.start_epoch == 1
    rows = (Path(t.save_dir) / "results.csv").read_text().splitlines()
    assert [r.split(",")[0].strip() for r in rows[1:]] == ["0", "1"]  # YOLOv5 counts epochs from 0


def test_crash_while_saving_keeps_last_checkpoint(shapes, tmp_path, monkeypatch):
    opt = train.parse_opt(FAST + ["--data", str(shapes), "--epochs", "1", "--project", str(tmp_path), "--noplots"])
    from models.yolo import resolve_cfg

    t = YOLOv5Trainer(overrides=train.engine_overrides(opt, str(resolve_cfg(opt.cfg))), hyp=load_hyp(opt.hyp))
    t.train()
    last = Path(t.save_dir) / "weights/last.pt"
    good = last.read_bytes()

    def crash(self, data):  # the disk fills up half-way through writing
        with open(self, "wb") as f:
            f.write(data[: len(data) // 2])
        raise OSError("No space left on device")

    monkeypatch.setattr(Path, "write_bytes", crash)
    from utils.engine import CheckpointSaveError

    with pytest.raises(CheckpointSaveError, match="No space left on device; training stopped, the previous last.pt"):
        t.save_model()
    monkeypatch.undo()
    assert last.read_bytes() == good
    assert not list(last.parent.glob("*.tmp"))  # the half-written temporary file is removed
    torch.load(last, weights_only=False)  # still a valid checkpoint


def test_bad_labels_and_images_are_skipped_with_warnings(shapes, tmp_path, capfd, caplog):
    """Corrupt image, wrong column count, class >= nc, out-of-range coords: reported with the file, run goes on."""
    root = tmp_path / "bad"
    shutil.copytree(Path(yaml.safe_load(shapes.read_text())["path"]), root)
    labels = sorted((root / "labels/train").glob("*.txt"))
    images = sorted((root / "images/train").glob("*.png"))
    (images[0]).write_bytes(b"\x89PNG\r\n\x1a\nnot really")  # corrupt image
    labels[1].write_text("0 0.5 0.5 0.2\n")  # 4 columns
    labels[2].write_text("9 0.5 0.5 0.2 0.2\n")  # class 9 with nc=4
    labels[3].write_text("0 1.5 0.5 0.2 0.2\n")  # outside the image
    labels[4].write_text("1 0.5 0.5 0.2 0.2\n1 0.5 0.5 0.2 0.2\n")  # duplicate row: removed, image kept
    for cache in (root / "labels").glob("*.cache"):
        cache.unlink()
    data = tmp_path / "bad.yaml"
    data.write_text(yaml.safe_dump({"path": str(root), "train": "images/train", "val": "images/val",
                                    "names": ["circle", "rectangle", "triangle", "star"]}))
    trainer = train.run(**vars(train.parse_opt(FAST + ["--data", str(data), "--epochs", "1", "--project",
                                                      str(tmp_path / "runs"), "--noplots", "--noautoanchor"])))
    n_train = len(trainer.train_loader.dataset)
    assert n_train == len(images) - 4
    out = capfd.readouterr()
    text = out.out + out.err + caplog.text
    for f in (images[0], images[1], images[2], images[3]):
        assert f.name in text


@pytest.mark.parametrize("content, message", [
    ({"train": "images/train", "val": "images/val"}, "names"),
    ({"path": "/nonexistent/place", "train": "images/train", "val": "images/val", "names": ["a"]}, "images not found"),
])
def test_bad_data_yaml_fails_before_training(tmp_path, content, message, cli_error):
    data = tmp_path / "data.yaml"
    data.write_text(yaml.safe_dump(content))
    err = cli_error(train.main, FAST + ["--data", str(data), "--epochs", "1", "--project", str(tmp_path)])
    assert message in err and "data.yaml" in err
    assert not (tmp_path / "exp" / "weights" / "last.pt").exists()


def test_missing_data_yaml_is_one_clear_error(tmp_path, cli_error):
    assert "nope.yaml" in cli_error(train.main, ["--data", str(tmp_path / "nope.yaml"), "--project", str(tmp_path)])


def test_data_yaml_found_by_name():
    from utils.engine import resolve_data

    assert resolve_data("VisDrone.yaml") == str(ROOT / "data" / "VisDrone.yaml")
    assert resolve_data("coco.yaml") == str(ROOT / "data" / "coco.yaml")


def test_empty_dataset_fails_before_training(tmp_path, cli_error):
    root = tmp_path / "empty"
    for split in ("train", "val"):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
    data = tmp_path / "empty.yaml"
    data.write_text(yaml.safe_dump({"path": str(root), "train": "images/train", "val": "images/val", "names": ["a"]}))
    err = cli_error(train.main, FAST + ["--data", str(data), "--epochs", "1", "--project", str(tmp_path / "runs")])
    assert "ERROR:" in err and "images" in err.lower() and str(root) in err
    assert not list((tmp_path / "runs").glob("*/weights/last.pt"))
