"""Hostile and careless input: no checkpoint runs code on any path that opens one, inconsistent model YAMLs and numbers
out of range fail before anything is built or written, corrupt images get their real reason, resume speaks YOLOv5."""

from __future__ import annotations

import logging
import pickle
import subprocess
import sys
from copy import deepcopy
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import detect
import export
import train
import val
from models.yolo import Model, ModelYAMLError
from models.yolo import main as yolo_main
from tests.helpers import one_error
from tests.test_checkpoint import Evil, write_original_checkpoint
from utils import exporters
from utils.checkpoint import CheckpointError
from utils.dataprep import make_shapes_dataset
from utils.engine import YOLOv5Trainer

pytestmark = [pytest.mark.filterwarnings("ignore::FutureWarning"),
              pytest.mark.filterwarnings("ignore:Couldn.t retrieve source code:UserWarning")]  # legacy torch.save
ROOT = Path(__file__).resolve().parents[1]
NAMES = ["circle", "rectangle", "triangle", "star"]
FORMATS = ("plain", "zip", "legacy", "official")  # every way a .pt file can be written


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    make_shapes_dataset(root / "shapes", n_train=8, n_val=4, imgsz=64, seed=0)
    f = root / "shapes.yaml"
    f.write_text(yaml.safe_dump({"path": str(root / "shapes"), "train": "images/train", "val": "images/val",
                                 "names": dict(enumerate(NAMES))}))
    return f


@pytest.fixture(scope="module")
def model() -> Model:
    cfg = yaml.safe_load((ROOT / "models" / "yolov5n.yaml").read_text())
    cfg["nc"] = len(NAMES)
    torch.manual_seed(0)
    m = Model(cfg, verbose=False).eval()
    m.names = dict(enumerate(NAMES))
    return m


def write_evil(fmt: str, path: Path, model: Model, marker: Path) -> Path:
    """A checkpoint whose unpickling with plain ``pickle``/``torch.load`` would create ``marker``.

    plain: a pickle that is no torch.save file; zip/legacy: torch.save (zip or pre-1.6 format) of a usable model with
    payloads at the top level and inside the model; official: the original YOLOv5 layout with a payload as ``opt``.
    """
    m = deepcopy(model).half()
    m.payload = Evil(marker)
    if fmt == "plain":
        with open(path, "wb") as f:
            pickle.dump({"model": m, "payload": Evil(marker)}, f)
    elif fmt in ("zip", "legacy"):
        torch.save({"epoch": -1, "model": None, "ema": m, "optimizer": None, "payload": Evil(marker)}, path,
                   _use_new_zipfile_serialization=fmt == "zip")
    else:
        write_original_checkpoint(path, model, names=NAMES, extra={"opt": Evil(marker)})
    return path


def write_resumable(path: Path, model: Model, data: Path, marker: Path | None = None, epoch: int = 0,
                    epochs: int = 2, legacy: bool = False) -> Path:
    """A train.py checkpoint interrupted after ``epoch`` (or finished, ``epoch=-1``), optionally with payloads."""
    m = deepcopy(model).half()
    args = {"model": str(ROOT / "models" / "yolov5n.yaml"), "data": str(data), "epochs": epochs, "imgsz": 64,
            "batch": 4, "workers": 0, "plots": False, "optimizer": "SGD", "close_mosaic": 0, "task": "detect",
            "mode": "train", "save_dir": str(path.parent.parent), "name": path.parent.parent.name}
    ckpt = {"epoch": epoch, "best_fitness": None, "model": None, "ema": m, "updates": 1, "optimizer": None,
            "train_args": args}
    if marker is not None:
        m.payload = Evil(marker)
        ckpt["payload"] = Evil(marker)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, path, _use_new_zipfile_serialization=not legacy)
    return path



# ----------------------------------------------------------------------------------------------------
# 1. No checkpoint runs code, on any path that opens one
# ----------------------------------------------------------------------------------------------------


def _no_training_or_export(monkeypatch) -> None:
    """train.py stops once the trainer is built and export.py once the model is loaded (where checkpoints open)."""
    monkeypatch.setattr(YOLOv5Trainer, "train", lambda self: None)
    monkeypatch.setattr(export, "export_model", lambda model, *args, **kwargs: {})


ENTRY_POINTS = {
    "train --weights --cfg": lambda w, d, t: train.main(["--weights", str(w), "--cfg", "models/yolov5n.yaml",
                                                         "--data", str(d), "--imgsz", "64", "--project", str(t)]),
    "train --weights": lambda w, d, t: train.main(["--weights", str(w), "--data", str(d), "--imgsz", "64",
                                                   "--project", str(t)]),
    "val.py": lambda w, d, t: val.main(["--weights", str(w), "--data", str(d), "--imgsz", "64", "--batch-size", "4",
                                        "--project", str(t), "--noplots"]),
    "detect.py": lambda w, d, t: detect.main(["--weights", str(w), "--source", str(Path(yaml.safe_load(
        d.read_text())["path"]) / "images" / "val"), "--imgsz", "64", "--project", str(t), "--nosave"]),
    "export.py": lambda w, d, t: export.main(["--weights", str(w), "--include", "torchscript", "--imgsz", "64"]),
}


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
@pytest.mark.parametrize("fmt", FORMATS)
def test_malicious_checkpoint_runs_nothing_on_cli_paths(fmt, entry, model, shapes, tmp_path, monkeypatch, capsys):
    marker = tmp_path / "pwned"
    evil = write_evil(fmt, tmp_path / f"evil-{fmt}.pt", model, marker)
    _no_training_or_export(monkeypatch)
    if fmt == "plain":  # not a torch.save file: refused with what it is
        assert "a plain Python pickle" in one_error(lambda a: ENTRY_POINTS[entry](evil, shapes, tmp_path / "runs"), [],
                                              capsys)
    else:  # a usable model: the command works, the payloads stay inert records
        ENTRY_POINTS[entry](evil, shapes, tmp_path / "runs")
    assert not marker.exists()


@pytest.mark.parametrize("fmt", FORMATS)
def test_malicious_checkpoint_runs_nothing_in_engine_loaders(fmt, model, tmp_path):
    """The engine's own loading (its load_checkpoint, AutoBackend, strip_optimizer) goes through our loader."""
    from ultralytics.nn.autobackend import AutoBackend
    from ultralytics.nn.tasks import load_checkpoint
    from ultralytics.utils.torch_utils import strip_optimizer

    marker = tmp_path / "pwned"
    evil = write_evil(fmt, tmp_path / f"evil-{fmt}.pt", model, marker)
    if fmt == "plain":
        with pytest.raises(CheckpointError, match="a plain Python pickle"):
            load_checkpoint(evil)
        with pytest.raises(CheckpointError):
            AutoBackend(str(evil), verbose=False)
        assert strip_optimizer(evil) == {}  # the engine skips what it cannot load
    else:
        m, ckpt = load_checkpoint(evil)
        assert isinstance(m, Model) and m.names == dict(enumerate(NAMES)) and ckpt.get("payload") is None
        assert AutoBackend(str(evil), verbose=False).names == dict(enumerate(NAMES))
        assert isinstance(strip_optimizer(evil)["model"], Model)
        assert isinstance(load_checkpoint(evil)[0], Model)  # the rewritten file loads again
    assert not marker.exists()


@pytest.mark.parametrize("how", ["--resume path", "--resume", "engine"])
@pytest.mark.parametrize("fmt", FORMATS)
def test_malicious_checkpoint_runs_nothing_on_resume(fmt, how, model, shapes, tmp_path, monkeypatch, capsys):
    """--resume with a path, a bare --resume (newest last.pt under --project), and the engine's resume path itself
    (its check_resume and setup_model, without train.py's check before)."""
    marker = tmp_path / "pwned"
    last = tmp_path / "runs" / "exp" / "weights" / "last.pt"
    if fmt in ("zip", "legacy"):  # an interrupted run: resumable, with payloads
        write_resumable(last, model, shapes, marker, legacy=fmt == "legacy")
    else:
        last.parent.mkdir(parents=True)
        write_evil(fmt, last, model, marker)

    class Stop(Exception):
        pass

    def stop_after_loading(self, ckpt):  # training would start next
        resume_training(self, ckpt)
        raise Stop

    resume_training = YOLOv5Trainer.resume_training
    monkeypatch.setattr(YOLOv5Trainer, "resume_training", stop_after_loading)
    argv = {"--resume path": ["--resume", str(last)], "--resume": ["--resume", "--project", str(tmp_path / "runs")]}
    options = {"--resume path": {"resume": str(last)}, "--resume": {"resume": True, "project": str(tmp_path / "runs")}}
    engine_args = {"resume": str(last), "model": str(last), "data": str(shapes)}
    if fmt in ("zip", "legacy"):
        with pytest.raises(Stop):
            if how == "engine":
                YOLOv5Trainer(overrides=engine_args).train()
            else:
                train.run(**options[how])
    elif how == "engine":  # refused (plain) or found not resumable (official) by the engine itself
        with pytest.raises((CheckpointError, FileNotFoundError, AssertionError)):
            YOLOv5Trainer(overrides=engine_args).train()
    else:
        err = one_error(train.main, argv[how], capsys)
        assert str(last) in err and ("a plain Python pickle" in err or "without this project's training state" in err)
    assert not marker.exists()


def test_ddp_worker_loads_checkpoints_through_our_loader(model, tmp_path):
    """A DDP worker unpickles the trainer class (importing utils.engine) before its trainer opens any checkpoint."""
    marker = tmp_path / "pwned"
    evil = write_evil("zip", tmp_path / "evil.pt", model, marker)
    code = (f"import pickle, sys; sys.path.insert(0, {str(ROOT)!r}); "
            f"pickle.loads({pickle.dumps(YOLOv5Trainer)!r}); "
            f"from ultralytics.nn.tasks import load_checkpoint; "
            f"print(type(load_checkpoint({str(evil)!r})[0]).__module__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=300,
                         env={**__import__("os").environ, "YOLO_OFFLINE": "1"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "models.yolo"
    assert not marker.exists()


def test_torchscript_archive_is_not_loaded_as_checkpoint(model, tmp_path):
    """torch.load would hand a TorchScript archive to torch.jit.load, which runs the archive's code."""
    f = tmp_path / "model.pt"
    torch.jit.script(torch.nn.Conv2d(3, 3, 1)).save(str(f))
    with pytest.raises(CheckpointError, match="a TorchScript archive"):
        train.run(resume=str(f))


# ----------------------------------------------------------------------------------------------------
# 5. Resume speaks YOLOv5
# ----------------------------------------------------------------------------------------------------


def _snapshot(folder: Path) -> list[tuple[str, int]]:
    return sorted((str(p.relative_to(folder)), p.stat().st_mtime_ns) for p in folder.rglob("*"))


def test_resume_finished_run_writes_nothing(model, shapes, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the engine's stray folders would appear under ./runs
    last = write_resumable(tmp_path / "runs" / "exp" / "weights" / "last.pt", model, shapes, epoch=-1, epochs=3)
    before = _snapshot(tmp_path)
    err = one_error(train.main, ["--resume", str(last)], capsys)
    assert err == (f"ERROR: --resume {last}: trained to 3 epochs, nothing to resume; start a new run with "
                   f"python train.py --weights {last}")
    err = one_error(train.main, ["--resume", "--project", str(tmp_path / "runs")], capsys)  # bare: same file
    assert "trained to 3 epochs, nothing to resume" in err
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize("content, what", [
    (b"", "an empty file (0 bytes)"),
    (b"\xff\xd8\xff\xe0" + bytes(64), "a JPEG image"),
    (b"epochs: 3\nlr0: 0.01\n", 'a text file ("epochs: 3")'),
    (b"nc: 80\nanchors: 3\nbackbone: []\n", "a model YAML (pass it with --cfg)"),
])
def test_resume_non_checkpoint_says_what_the_file_is(content, what, tmp_path, capsys):
    f = tmp_path / "last.pt"
    f.write_bytes(content)
    err = one_error(train.main, ["--resume", str(f)], capsys)
    assert err.startswith(f"ERROR: {f}: {what}, not a PyTorch checkpoint; expected")


def test_resume_official_weights_and_missing_run(tmp_path, model, capsys):
    f = tmp_path / "yolov5n.pt"
    write_original_checkpoint(f, model, names=NAMES)
    err = one_error(train.main, ["--resume", str(f)], capsys)
    assert "without this project's training state" in err and f"python train.py --weights {f}" in err
    err = one_error(train.main, ["--resume", "--project", str(tmp_path / "nothing")], capsys)
    assert "no last.pt found under" in err


def test_resume_warns_about_no_flag_the_user_did_not_pass(model, shapes, tmp_path, monkeypatch, caplog):
    from ultralytics.utils import LOGGER

    last = write_resumable(tmp_path / "runs" / "exp" / "weights" / "last.pt", model, shapes)
    monkeypatch.setattr(YOLOv5Trainer, "train", lambda self: None)
    LOGGER.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.WARNING, logger=LOGGER.name):
            trainer = train.run(resume=str(last))
    finally:
        LOGGER.removeHandler(caplog.handler)
    assert "Resume ignores" not in caplog.text
    assert Path(trainer.save_dir) == last.parent.parent and trainer.args.epochs == 2


# ----------------------------------------------------------------------------------------------------
# 2. Model YAMLs that do not describe one consistent model fail before anything is built
# ----------------------------------------------------------------------------------------------------


def _set(where: str, value):
    """An edit of the yolov5n YAML: ``where`` is a key, or 'backbone.1' / 'head.-1' for a layer row."""
    def edit(cfg):
        if "." in where:
            section, i = where.split(".")
            cfg[section][int(i)] = value
        else:
            cfg[where] = value
    return edit


ANCHORS = [[10, 13, 16, 30, 33, 23], [30, 61, 62, 45, 59, 119], [116, 90, 156, 198, 373, 326]]


@pytest.mark.parametrize("edit, message", [
    (_set("anchors", ANCHORS[:2]), r"layer 24 .*Detect takes 3 input layers \[17, 20, 23\] but anchors has 2 row"),
    (_set("anchors", ANCHORS + [[1, 2, 3, 4, 5, 6]]), r"layer 24 .*Detect takes 3 input layers .* has 4 row"),
    (_set("anchors", [ANCHORS[0], [30, 61, 62, 45], ANCHORS[2]]), r"anchors: row 2 has 4 values \(2 anchors\) but "
                                                                  r"row 1 has 6"),
    (_set("anchors", [[10, 13, 16, 30, 33], *ANCHORS[1:]]), r"anchors: row 1 has 5 values; .* even number"),
    (_set("anchors", [[10, -13, 16, 30, 33, 23], *ANCHORS[1:]]), r"anchors: row 1: -13 is not a positive width"),
    (_set("anchors", 0), r"anchors: 0 must be a positive number of anchors"),
    (_set("anchors", [1, 2, 3]), r"anchors: expected one row of w,h pixel pairs per detection level"),
    (_set("nc", 0), r"nc: 0 must be a positive integer"),
    (_set("depth_multiple", 0), r"depth_multiple: 0 must be a positive number"),
    (_set("width_multiple", -0.5), r"width_multiple: -0.5 must be a positive number"),
    (_set("backbone.1", [-1, 1, "Conv", [-128, 3, 2]]), r"layer 1 .*output channel count and must be a positive"),
    (_set("backbone.1", [-1, 1, "Conv", [128, 0, 2]]), r"layer 1 .*Conv kernel 0 must be a positive integer"),
    (_set("backbone.1", [-1, 1, "Conv", [128, 3, -2]]), r"layer 1 .*Conv stride -2 must be a positive integer"),
    (_set("backbone.9", [-1, 1, "SPPF", [1024, 4]]), r"layer 9 .*SPPF pooling kernel 4: kernels must be odd"),
    (_set("head.0", [[-1, 6], 1, "Conv", [512, 1, 1]]), r"layer 10 .*Conv takes one input layer"),
    (_set("head.-1", [[17, 20, 23], 1, "Detect", [80, "anchors", 3]]), r"layer 24 .*Detect takes \[nc, anchors\]"),
    (_set("head.2", [[-1, 4], 1, "Concat", [1]]), r"layer 12 \(Concat, from \[-1, 4\]\) cannot take inputs of shape"),
])
def test_inconsistent_yaml_fails_naming_file_layer_and_fix(tmp_path, edit, message, monkeypatch):
    cfg = yaml.safe_load((ROOT / "models" / "yolov5n.yaml").read_text())
    edit(cfg)
    f = tmp_path / "bad.yaml"
    f.write_text(yaml.safe_dump(cfg, sort_keys=False))
    built = []
    monkeypatch.setattr(torch.nn.Conv2d, "reset_parameters", lambda self: built.append(self))
    with pytest.raises(ModelYAMLError, match=message) as e:
        Model(f, verbose=False)
    assert str(e.value).startswith(str(f)) and "\n" not in str(e.value)
    if "cannot take inputs" not in message:  # caught before any layer of the model was built
        assert not built


def test_detect_nc_must_follow_the_model_nc():
    cfg = yaml.safe_load((ROOT / "models" / "yolov5n.yaml").read_text())
    cfg["head"][-1][3] = [80, "anchors"]  # a literal class count
    assert Model(cfg, verbose=False).model[-1].nc == 80
    with pytest.raises(ModelYAMLError, match=r"Detect takes \[nc, anchors\] \(nc = 4\), got \[80"):
        Model(cfg, nc=4, verbose=False)  # would build an 80-class head inside a 4-class model


def test_yolo_cli_one_line_errors(tmp_path, capsys):
    cfg = yaml.safe_load((ROOT / "models" / "yolov5n.yaml").read_text())
    cfg["anchors"] = cfg["anchors"][:2]
    f = tmp_path / "two-rows.yaml"
    f.write_text(yaml.safe_dump(cfg))
    assert "but anchors has 2 row(s)" in one_error(yolo_main, ["--cfg", str(f)], capsys)
    assert "not_a_model.yaml" in one_error(yolo_main, ["--cfg", "not_a_model.yaml"], capsys)
    assert one_error(yolo_main, ["--imgsz", "0"], capsys).startswith("ERROR: --imgsz 0: image sizes must be positive")
    assert "--batch-size 0" in one_error(yolo_main, ["--batch-size", "0", "--profile"], capsys)


# ----------------------------------------------------------------------------------------------------
# 3. Every CLI checks its numbers before loading anything or creating a run folder
# ----------------------------------------------------------------------------------------------------

CLIS = {"train": train.main, "val": val.main, "detect": detect.main, "export": export.main}


@pytest.mark.parametrize("cli, argv, message", [
    ("train", ["--imgsz", "0"], "--imgsz 0: image sizes must be positive (pixels)"),
    ("train", ["--epochs", "0"], "--epochs 0: must be a positive integer"),
    ("train", ["--batch-size", "0"], "--batch-size 0: must be a positive integer (or -1 for autobatch)"),
    ("train", ["--workers", "-1"], "--workers -1: must be at least 0"),
    ("train", ["--label-smoothing", "1.5"], "--label-smoothing 1.5: must be between 0 and 1"),
    ("val", ["--imgsz", "-32"], "--imgsz -32: image sizes must be positive (pixels)"),
    ("val", ["--conf-thres", "1.5"], "--conf-thres 1.5: must be between 0 and 1"),
    ("val", ["--iou-thres", "-0.1"], "--iou-thres -0.1: must be between 0 and 1"),
    ("val", ["--batch-size", "0"], "--batch-size 0: must be a positive integer"),
    ("detect", ["--conf-thres", "2"], "--conf-thres 2.0: must be between 0 and 1"),
    ("detect", ["--conf-thres", "-1"], "--conf-thres -1.0: must be between 0 and 1"),
    ("detect", ["--imgsz", "0"], "--imgsz 0: image sizes must be positive (pixels)"),
    ("detect", ["--imgsz", "640", "480", "320"], "--imgsz 640 480 320: give one size or two (height width)"),
    ("detect", ["--vid-stride", "0"], "--vid-stride 0: must be a positive integer"),
    ("detect", ["--max-det", "0"], "--max-det 0: must be a positive integer"),
    ("export", ["--imgsz", "0"], "--imgsz 0: image sizes must be positive (pixels)"),
    ("export", ["--imgsz", "-32"], "--imgsz -32: image sizes must be positive (pixels)"),
    ("export", ["--batch-size", "0"], "--batch-size 0: must be a positive integer"),
])
def test_numbers_out_of_range_fail_first(cli, argv, message, tmp_path, capsys, monkeypatch):
    import utils.checkpoint

    def no_loading(*args, **kwargs):
        raise AssertionError("a checkpoint was opened before the arguments were checked")

    for name in ("load_checkpoint", "load_model", "load_backend"):
        monkeypatch.setattr(utils.checkpoint, name, no_loading)
    project = tmp_path / "runs"
    weights = tmp_path / "w.pt"
    extra = {"train": ["--project", str(project)], "val": ["--project", str(project), "--weights", str(weights)],
             "detect": ["--project", str(project), "--weights", str(weights)], "export": ["--weights", str(weights)]}
    err = one_error(CLIS[cli], argv + extra[cli], capsys)
    assert err == f"ERROR: {message}" or err.startswith(f"ERROR: {message}")
    assert not project.exists()


def test_export_rounds_image_size_up_to_the_stride_with_a_warning(model, tmp_path, caplog, monkeypatch):
    from ultralytics.utils import LOGGER

    shapes = []

    def record(wrapper, im, file, metadata):
        shapes.append(tuple(im.shape))
        file.write_bytes(b"")
        return file

    monkeypatch.setattr(exporters, "export_torchscript", record)
    LOGGER.addHandler(caplog.handler)
    try:
        exporters.export_model(deepcopy(model), tmp_path / "m.pt", include=["torchscript"], imgsz=[100], check=False)
    finally:
        LOGGER.removeHandler(caplog.handler)
    assert "must be multiple of max stride 32, updating to [128, 128]" in caplog.text
    assert shapes == [(1, 3, 128, 128)]


def test_failed_runs_leave_no_empty_run_folder(shapes, model, tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"path": "/nonexistent/place", "train": "images/train", "val": "images/val",
                                   "names": ["a"]}))
    one_error(train.main, ["--data", str(bad), "--imgsz", "64", "--project", str(tmp_path / "train")], capsys)
    assert not (tmp_path / "train").exists() or not list((tmp_path / "train").iterdir())
    weights = write_evil("zip", tmp_path / "w.pt", model, tmp_path / "unused")
    one_error(val.main, ["--data", str(bad), "--weights", str(weights), "--project", str(tmp_path / "val")], capsys)
    assert not (tmp_path / "val").exists() or not list((tmp_path / "val").iterdir())


def test_detect_list_file_with_a_bad_line_names_the_list(model, tmp_path, capsys):
    weights = write_evil("zip", tmp_path / "w.pt", model, tmp_path / "unused")
    listing = tmp_path / "list.txt"
    listing.write_text("hello\n")
    err = one_error(detect.main, ["--weights", str(weights), "--source", str(listing), "--project",
                                  str(tmp_path / "runs")], capsys)
    assert f"--source {listing}, line 1: hello: no such file or directory" in err
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").iterdir())


# ----------------------------------------------------------------------------------------------------
# 4. Corrupt images get their real reason, and nothing is ever pip-installed
# ----------------------------------------------------------------------------------------------------


@pytest.fixture
def no_pip(monkeypatch):
    """Any attempt to install a package fails the test."""
    def refuse(cmd, *args, **kwargs):
        if "pip" in " ".join(map(str, cmd)):
            raise AssertionError(f"tried to install: {cmd}")
        return real(cmd, *args, **kwargs)

    real = subprocess.check_output
    monkeypatch.setattr(subprocess, "check_output", refuse)


def test_corrupt_images_report_the_real_reason(tmp_path, no_pip):
    import cv2
    from ultralytics.data.utils import verify_image_label

    im = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    good = cv2.imencode(".jpg", im)[1].tobytes()
    png = cv2.imencode(".png", im)[1].tobytes()
    files = {"empty.jpg": b"", "random.jpg": np.random.default_rng(1).bytes(3000), "text.jpg": b"hello world\n",
             "cut.jpg": good[: len(good) // 2], "cut.png": png[: len(png) // 2], "good.jpg": good}
    expected = {"empty.jpg": "empty file (0 bytes)", "random.jpg": "not an image (3000 bytes of unrecognised binary",
                "text.jpg": 'not an image (a text file ("hello world"))', "cut.jpg": "truncated (",
                "cut.png": "truncated (", "good.jpg": None}
    for name, data in files.items():
        f = tmp_path / name
        f.write_bytes(data)
        msg = verify_image_label((str(f), str(tmp_path / "none.txt"), "", False, 4, 0, 0, False))[-1]
        if expected[name] is None:
            assert msg == "", msg
        else:
            assert msg.startswith(f"{f}: ignoring corrupt image/label: {expected[name]}"), msg
            assert "pi_heif" not in msg


def test_engine_never_installs_packages(no_pip, caplog):
    from PIL import Image, UnidentifiedImageError
    from ultralytics.utils import checks

    assert checks.AUTOINSTALL is False
    assert checks.check_requirements("surely-not-installed-package-xyz") is False
    with pytest.raises(UnidentifiedImageError):  # Pillow's own error, not an attempt to fetch a HEIF plugin
        Image.open(__import__("io").BytesIO(b"not an image at all"))
