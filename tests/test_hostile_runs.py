"""Hostile conditions around runs: concurrent runs in one folder, a full disk during a checkpoint save, absurd image
sizes, a CUDA device on a machine without one, hyperparameter files missing keys."""

from __future__ import annotations

import errno
import os
import pathlib
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml

import train
from utils.cli import MAX_IMAGE_SIZE, ArgumentError, check_device, check_image_size, no_empty_run_dir, user_errors
from utils.engine import (
    AtomicCheckpoints,
    CheckpointSaveError,
    HypError,
    YOLOv5Trainer,
    increment_dir,
    load_hyp,
    select_device,
)
from utils.rundir import LOCK_NAME, RunDirError, claim_run_dir, created_by_claim, lock_run_dir, release_run_dir

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "YOLO_OFFLINE": "1"}

# A process that claims a run folder (argv: folder, exist_ok 0/1), prints it, then holds it until stdin closes.
HOLDER = """
import sys
from utils.rundir import claim_run_dir
print(claim_run_dir(sys.argv[1], sys.argv[2] == "1"), flush=True)
sys.stdin.read()
"""


def start_holder(folder: Path, exist_ok: bool = True) -> tuple[subprocess.Popen, Path]:
    p = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder), "1" if exist_ok else "0"], cwd=ROOT, env=ENV,
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    return p, Path(p.stdout.readline().strip())


def one_error_line(capsys) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("ERROR: "), err
    assert "Traceback" not in err[0]
    return err[0]


# ----- run folders -------------------------------------------------------------------------------------------------
def test_many_threads_claiming_at_once_get_distinct_folders(tmp_path):
    n, barrier, got = 24, threading.Barrier(24), []

    def claim():
        barrier.wait()
        got.append(increment_dir(tmp_path / "runs" / "same"))

    threads = [threading.Thread(target=claim) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(got)) == n  # nobody shares a folder
    assert sorted(p.name for p in got) == sorted(["same"] + [f"same{i}" for i in range(2, n + 1)])
    assert all(p.is_dir() and (p / LOCK_NAME).is_file() for p in got)  # each created and locked


def test_processes_started_together_get_distinct_folders(tmp_path):
    folder = tmp_path / "same"
    holders = [subprocess.Popen([sys.executable, "-c", HOLDER, str(folder), "0"], cwd=ROOT, env=ENV,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for _ in range(4)]
    got = [Path(p.stdout.readline().strip()) for p in holders]
    locks = {int((d / LOCK_NAME).read_text().split()[0]) for d in got}
    for p in holders:
        p.communicate("")
    assert len(set(got)) == 4 and {p.pid for p in holders} == locks  # each folder locked by its own process
    assert not any((d / LOCK_NAME).exists() for d in got)  # released at exit


def test_exist_ok_refuses_while_the_holder_lives_and_takes_over_when_it_died(tmp_path):
    holder, folder = start_holder(tmp_path / "exp")
    try:
        with pytest.raises(RunDirError, match=rf"exp --exist-ok: run folder .*exp is in use by process {holder.pid} "
                                              rf"\(lock file .*\.lock\); wait for that run to end"):
            increment_dir(folder, exist_ok=True)
        assert increment_dir(folder).name == "exp2"  # without --exist-ok: the next folder, as always
    finally:
        holder.kill()
        holder.communicate()
    assert (folder / LOCK_NAME).read_text().split()[0] == str(holder.pid)  # killed: its lock stays behind...
    assert increment_dir(folder, exist_ok=True) == folder  # ...and the folder is taken over
    assert (folder / LOCK_NAME).read_text().split()[0] == str(os.getpid())
    release_run_dir(folder)
    assert not (folder / LOCK_NAME).exists()


def test_a_lock_that_is_not_a_lock_is_taken_over(tmp_path):
    (tmp_path / "exp").mkdir()
    (tmp_path / "exp" / LOCK_NAME).write_text("")  # cut short, or edited by hand
    assert increment_dir(tmp_path / "exp", exist_ok=True) == tmp_path / "exp"
    assert (tmp_path / "exp" / LOCK_NAME).read_text().split()[0] == str(os.getpid())
    release_run_dir(tmp_path / "exp")


def test_train_cli_refuses_a_folder_in_use(tmp_path):
    holder, folder = start_holder(tmp_path / "exp")
    try:
        r = subprocess.run([sys.executable, "train.py", "--project", str(tmp_path), "--name", "exp", "--exist-ok",
                            "--device", "cpu"], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    finally:
        holder.communicate("")
    err = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == 1 and len(err) == 1, r.stderr
    assert err[0].startswith("ERROR: --name exp --exist-ok: run folder") and f"process {holder.pid}" in err[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp"] and not list(folder.iterdir())  # nothing written


def test_resume_takes_the_lock_of_its_folder(tmp_path, monkeypatch):
    monkeypatch.setattr("utils.checkpoint.check_resumable", lambda last: None)  # a real one: see test_train.py
    (tmp_path / "exp" / "weights").mkdir(parents=True)
    last = tmp_path / "exp" / "weights" / "last.pt"
    last.write_bytes(b"checkpoint")
    opt = train.parse_opt(["--resume", str(last)])
    holder, _ = start_holder(tmp_path / "exp")
    try:
        with pytest.raises(RunDirError, match=rf"--resume .*last.pt: run folder .*exp is in use by process "
                                              rf"{holder.pid} .*still training; wait for it to end before resuming"):
            train.resume_overrides(opt)
    finally:
        holder.communicate("")  # that run ended: resume may take the folder now
    assert train.resume_overrides(opt)["save_dir"] == str((tmp_path / "exp").resolve())
    assert (tmp_path / "exp" / LOCK_NAME).read_text().split()[0] == str(os.getpid())
    release_run_dir(tmp_path / "exp")


def test_a_failed_run_removes_the_folder_it_claimed_and_releases_locks(tmp_path):
    d = increment_dir(tmp_path / "exp")
    assert d.is_dir() and created_by_claim(d)
    with pytest.raises(ValueError), no_empty_run_dir(d):
        raise ValueError("bad dataset")
    assert not d.exists()  # nothing was written: no folder left behind
    kept = increment_dir(tmp_path / "exp")
    with no_empty_run_dir(kept):
        (kept / "results.csv").write_text("epoch\n")
    assert kept.is_dir() and not (kept / LOCK_NAME).exists()  # the run ended: its lock is gone


def test_only_rank_zero_creates_or_locks(tmp_path, monkeypatch):
    (tmp_path / "exp").mkdir()
    monkeypatch.setenv("RANK", "1")
    assert claim_run_dir(tmp_path / "exp") == tmp_path / "exp2"  # the name rank 0 would take (it broadcasts its own)
    lock_run_dir(tmp_path / "exp")
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["exp"]  # nothing created, nothing locked


# ----- a full disk during a checkpoint save --------------------------------------------------------------------
class EngineLikeTrainer:
    """Writes checkpoints as the engine's ``save_model`` does: last.pt, best.pt, epochN.pt, each ``write_bytes``."""

    def __init__(self, wdir: Path):
        self.wdir, self.epoch, self.save_period = wdir, 4, 2
        self.last, self.best = wdir / "last.pt", wdir / "best.pt"

    def save_model(self) -> bool:
        data = os.urandom(4096)
        self.last.write_bytes(data)
        self.best.write_bytes(data)
        (self.wdir / f"epoch{self.epoch}.pt").write_bytes(data)
        return True


class Trainer(AtomicCheckpoints, EngineLikeTrainer):
    pass


def fill_disk_at(monkeypatch, name: str, code: int = errno.ENOSPC) -> None:
    """Writes to a file called ``name`` stop with OSError(code) after half their bytes."""
    real = pathlib.Path.write_bytes

    def write_bytes(self, data):
        if self.name != name:
            return real(self, data)
        with open(self, "wb") as f:
            f.write(data[: len(data) // 2])
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(pathlib.Path, "write_bytes", write_bytes)


@pytest.mark.parametrize("failing", ["last.pt.tmp", "best.pt.tmp", "epoch4.pt"])
def test_disk_full_during_save_keeps_last_pt_and_leaves_no_partial_file(tmp_path, monkeypatch, capsys, failing):
    t = Trainer(tmp_path)
    (tmp_path / "last.pt").write_bytes(b"previous last")
    (tmp_path / "best.pt").write_bytes(b"previous best")
    fill_disk_at(monkeypatch, failing)
    with pytest.raises(SystemExit) as e, user_errors():
        t.save_model()
    assert e.value.code == 1
    line = one_error_line(capsys)
    named = tmp_path / failing.removesuffix(".tmp")
    assert line == (f"ERROR: could not save checkpoint {named}: the disk is full (ENOSPC: no space left on device); "
                    f"training stopped, the previous last.pt is intact; free disk space, then continue with python "
                    f"train.py --resume {tmp_path / 'last.pt'}")
    assert (tmp_path / "last.pt").read_bytes() == b"previous last"
    assert (tmp_path / "best.pt").read_bytes() == b"previous best"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt", "last.pt"]  # no .tmp, no partial epoch4.pt
    assert t.last == tmp_path / "last.pt" and t.wdir == tmp_path  # the trainer's paths are restored


def test_other_write_errors_say_what_failed(tmp_path, monkeypatch):
    fill_disk_at(monkeypatch, "last.pt.tmp", errno.EIO)
    with pytest.raises(CheckpointSaveError, match=rf"could not save checkpoint .*last.pt: {os.strerror(errno.EIO)} "
                                                  r"\(EIO\); training stopped, no earlier checkpoint was written"):
        Trainer(tmp_path).save_model()
    assert list(tmp_path.iterdir()) == []


def test_real_engine_save_then_disk_full_keeps_the_saved_checkpoint(tmp_path, monkeypatch):
    """The engine's own save_model through our mixin: a first save lands, a second on a full disk changes nothing."""
    model = torch.nn.Conv2d(3, 4, 1)
    t = object.__new__(YOLOv5Trainer)
    t.wdir = tmp_path / "weights"
    t.last, t.best, t.csv = t.wdir / "last.pt", t.wdir / "best.pt", tmp_path / "results.csv"
    t.model, t.ema = model, SimpleNamespace(ema=model, updates=0)
    t.optimizer, t.scaler = torch.optim.SGD(model.parameters(), lr=0.1), torch.amp.GradScaler("cpu", enabled=False)
    t.epoch, t.best_fitness, t.fitness, t.metrics, t.save_period = 0, 0.5, 0.5, {}, -1
    t.stopper = SimpleNamespace(best_fitness=0.5, best_epoch=0)
    t.args = SimpleNamespace()
    assert t.save_model()
    saved = t.last.read_bytes()
    fill_disk_at(monkeypatch, "last.pt.tmp")
    t.epoch = 1
    with pytest.raises(CheckpointSaveError, match="the disk is full"):
        t.save_model()
    assert t.last.read_bytes() == saved and sorted(p.name for p in t.wdir.iterdir()) == ["best.pt", "last.pt"]


def test_disk_full_while_stripping_the_final_checkpoint_keeps_it(tmp_path, monkeypatch):
    import ultralytics.engine.trainer as engine_trainer

    class Final:
        def final_eval(self):
            engine_trainer.strip_optimizer(self.last)

    class T(AtomicCheckpoints, Final):
        last = tmp_path / "last.pt"

    T.last.write_bytes(b"trained")

    def strip(f, s="", updates=None):  # the engine's writes torch.save(..., s or f): cut short
        Path(s or f).write_bytes(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(engine_trainer, "strip_optimizer", strip)
    with pytest.raises(CheckpointSaveError, match=r"could not strip the optimizer from .*last.pt: the disk is full"):
        T().final_eval()
    assert T.last.read_bytes() == b"trained" and [p.name for p in tmp_path.iterdir()] == ["last.pt"]
    assert engine_trainer.strip_optimizer is strip  # put back


# ----- image sizes ---------------------------------------------------------------------------------------------
def test_image_size_has_a_stated_maximum(capsys):
    check_image_size("--imgsz", MAX_IMAGE_SIZE)
    check_image_size("--imgsz", [640, MAX_IMAGE_SIZE])
    with pytest.raises(ArgumentError, match=r"--imgsz 640 100000: image sizes are at most 16384 pixels"):
        check_image_size("--imgsz", [640, 100000])
    with pytest.raises(SystemExit) as e:
        train.main(["--imgsz", "100000"])
    assert e.value.code == 1
    assert one_error_line(capsys) == ("ERROR: --imgsz 100000: image sizes are at most 16384 pixels; use a smaller size "
                                      "(e.g. --imgsz 1280), or cut large images into tiles")


def test_every_cli_refuses_a_huge_image_size(tmp_path):
    import detect
    from classify import predict as cls_predict
    from classify import train as cls_train
    from classify import val as cls_val
    from models import yolo
    from utils import exporters, validation

    calls = {
        "train.py": lambda: train.check_options(train.parse_opt(["--imgsz", "100000"])),
        "val.py": lambda: validation.validate(weights="x.pt", imgsz=100000, project=tmp_path),
        "detect.py": lambda: detect.run(weights="x.pt", imgsz=[100000], project=tmp_path),
        "export.py": lambda: exporters.check_options([100000], 1, 17, 1),
        "models/yolo.py": lambda: yolo.run(imgsz=100000),
        "classify/train.py": lambda: cls_train.run(["--imgsz", "100000", "--project", str(tmp_path)]),
        "classify/val.py": lambda: cls_val.run(weights="x.pt", imgsz=100000, project=tmp_path),
        "classify/predict.py": lambda: cls_predict.run(weights="x.pt", imgsz=100000, project=tmp_path),
    }
    for script, call in calls.items():
        with pytest.raises(ArgumentError, match="--imgsz 100000: image sizes are at most 16384"):
            call()
    assert list(tmp_path.iterdir()) == []  # refused before any run folder was made


# ----- --device ------------------------------------------------------------------------------------------------
@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    monkeypatch.setattr(torch.version, "cuda", "12.4")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)


def test_device_cuda_without_a_gpu_names_the_flag_and_the_fix(no_cuda, capsys):
    for ok in ("", "cpu", None, "mps"):
        check_device(ok)
    with pytest.raises(ArgumentError, match=r"^--device cuda:1: no CUDA GPU is visible"):
        select_device("cuda:1")  # the project's select_device, used by the benchmarks
    with pytest.raises(SystemExit) as e:
        train.main(["--device", "cuda"])
    assert e.value.code == 1
    assert one_error_line(capsys) == ("ERROR: --device cuda: no CUDA GPU is visible (torch sees no CUDA GPU on this "
                                      "machine); use --device cpu")


def test_device_reasons(no_cuda, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.raises(ArgumentError, match=r"--device 0,1: no CUDA GPU is visible \(CUDA_VISIBLE_DEVICES is empty\)"):
        check_device("0,1")
    monkeypatch.setattr(torch.version, "cuda", None)
    with pytest.raises(ArgumentError, match=r"\(this torch build has no CUDA support\); use --device cpu"):
        check_device("0")
    with pytest.raises(ArgumentError, match=r"--device gpu: not a device; use --device cpu, or CUDA GPU numbers"):
        check_device("gpu")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    check_device("cuda:1")
    with pytest.raises(ArgumentError, match=r"--device 0,2: this machine has 2 CUDA GPU\(s\), numbered 0-1"):
        check_device("0,2")


def test_every_cli_checks_the_device_first(no_cuda, tmp_path):
    import detect
    from classify import val as cls_val
    from models import yolo
    from utils import validation

    calls = [lambda: validation.validate(weights="x.pt", device="cuda", project=tmp_path),
             lambda: detect.run(weights="x.pt", device="cuda", project=tmp_path),
             lambda: yolo.run(device="cuda"),
             lambda: cls_val.run(weights="x.pt", device="cuda", project=tmp_path)]
    for call in calls:
        with pytest.raises(ArgumentError, match="--device cuda: no CUDA GPU is visible"):
            call()
    assert list(tmp_path.iterdir()) == []


# ----- hyperparameter files ------------------------------------------------------------------------------------
def test_hyp_file_missing_keys_is_an_error(tmp_path, capsys):
    hyp = yaml.safe_load((ROOT / "data/hyps/hyp.shapes.yaml").read_text())
    del hyp["obj"], hyp["mosaic"]
    f = tmp_path / "hyp.short.yaml"
    f.write_text(yaml.safe_dump(hyp))
    with pytest.raises(HypError, match=r"hyp.short.yaml: missing hyperparameter\(s\) mosaic, obj; a YOLOv5 hyp file "
                                       r"names every key: add them \(e.g. from data/hyps/hyp.scratch-low.yaml\)"):
        load_hyp(f)
    with pytest.raises(SystemExit) as e:
        train.main(["--hyp", str(f), "--project", str(tmp_path / "runs")])
    assert e.value.code == 1 and "missing hyperparameter(s) mosaic, obj" in one_error_line(capsys)
    assert not (tmp_path / "runs").exists()


def test_bundled_and_evolved_hyp_files_load(tmp_path):
    import numpy as np

    from utils.evolve import NR, write_best

    for f in sorted((ROOT / "data" / "hyps").glob("hyp.*.yaml")):
        if "obj" in yaml.safe_load(f.read_text()):  # detection recipes (the others are classify/train.py's)
            load_hyp(f)
    base = {k: v for k, v in load_hyp("hyp.scratch-low.yaml").items() if k != "label_smoothing"}
    rows = np.array([[0.1] * NR + list(base.values())])
    assert load_hyp(write_best(tmp_path, list(base), rows)) == pytest.approx(base)  # evolve's output is a --hyp file
