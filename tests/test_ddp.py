"""Several processes: a real two-process DDP training (gloo on the CPU, launched by torch.distributed.run).

The same code path trains on several GPUs (NCCL) and several machines; only the backend and the device differ.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

import train
from tests.helpers import shapes_data
from utils.engine import device_count, load_hyp, split_hyp
from utils.loss import scale_hyp_for_model

ROOT = Path(__file__).resolve().parents[1]

# Runs train.py's main() in each process, after hooking the trainer so every rank leaves its parameters (as trained at
# the start and at the end of each epoch) in $SNAPSHOTS; $INTERRUPT stops rank 0 right after its first checkpoint.
DRIVER = """
import os, sys
sys.path.insert(0, {root!r})
import torch
from ultralytics.utils.torch_utils import unwrap_model
from utils import engine

rank, out = int(os.environ["RANK"]), os.environ["SNAPSHOTS"]
init = engine.YOLOv5Trainer.__init__

def snapshot(tag):
    def save(trainer):
        model = unwrap_model(trainer.model)
        state = {{k: v.detach().clone() for k, v in model.named_parameters()}}
        state["anchors"] = model.model[-1].anchors.clone()
        torch.save({{"state": state, "world_size": trainer.world_size, "save_dir": str(trainer.save_dir)}},
                   f"{{out}}/rank{{rank}}-{{tag(trainer)}}.pt")
    return save

def interrupt(trainer):
    raise SystemExit(3)

def hooked_init(self, *args, **kwargs):
    init(self, *args, **kwargs)
    self.add_callback("on_train_start", snapshot(lambda t: "start"))
    self.add_callback("on_train_epoch_end", snapshot(lambda t: f"epoch{{t.epoch}}"))
    if os.environ.get("INTERRUPT") and rank == 0:
        self.add_callback("on_model_save", interrupt)

engine.YOLOv5Trainer.__init__ = hooked_init
import train
sys.exit(train.main(sys.argv[1:]))
"""


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(driver: Path, args: list[str], snapshots: Path, interrupt: bool = False) -> subprocess.CompletedProcess:
    env = {**os.environ, "SNAPSHOTS": str(snapshots), "OMP_NUM_THREADS": "1", "YOLO_OFFLINE": "1"}
    env.pop("INTERRUPT", None)
    if interrupt:
        env["INTERRUPT"] = "1"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
           str(driver), *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=ROOT)


def load(path: Path) -> dict:
    return torch.load(path, weights_only=True)


@pytest.fixture(scope="module")
def tiny_shapes(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ddp-data")
    shapes_data(root, n_train=16, n_val=8, imgsz=64)
    hyp = yaml.safe_load((ROOT / "data/hyps/hyp.shapes.yaml").read_text()) | {"obj": 1.7, "warmup_epochs": 0.0}
    (root / "hyp.yaml").write_text(yaml.safe_dump(hyp))
    return root


def test_two_process_cpu_ddp_trains_in_step_and_resumes(tiny_shapes, tmp_path):
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER.format(root=str(ROOT)))
    snapshots = tmp_path / "snapshots"
    snapshots.mkdir()
    project = tmp_path / "runs"
    args = ["--device", "cpu", "--data", str(tiny_shapes / "shapes.yaml"), "--hyp", str(tiny_shapes / "hyp.yaml"),
            "--cfg", "models/yolov5n.yaml", "--imgsz", "64", "--batch-size", "8", "--epochs", "2", "--workers", "0",
            "--project", str(project), "--freeze", "1", "--sync-bn", "--noplots"]

    first = launch(driver, args, snapshots, interrupt=True)  # stops after epoch 1's checkpoint
    assert first.returncode != 0, first.stdout[-3000:] + first.stderr[-3000:]
    runs = [p for p in project.iterdir()]
    assert [p.name for p in runs] == ["exp"], "rank 0 alone creates the run folder"
    last = runs[0] / "weights" / "last.pt"
    assert last.is_file()

    resumed = launch(driver, ["--resume", str(last)], snapshots)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert sorted(p.name for p in project.iterdir()) == ["exp"]

    start0, start1 = load(snapshots / "rank0-start.pt"), load(snapshots / "rank1-start.pt")
    end0, end1 = load(snapshots / "rank0-epoch1.pt"), load(snapshots / "rank1-epoch1.pt")
    assert start0["world_size"] == end1["world_size"] == 2
    assert start0["save_dir"] == start1["save_dir"] == end1["save_dir"] == str(runs[0])
    for name in end0["state"]:  # DDP keeps the ranks in step: identical parameters (and AutoAnchor's anchors)
        assert torch.equal(end0["state"][name], end1["state"][name]), name
        assert torch.equal(start0["state"][name], start1["state"][name]), name
    frozen = [k for k in end0["state"] if k.startswith("model.0.")]
    assert frozen and all(torch.equal(start0["state"][k], end0["state"][k]) for k in frozen)  # --freeze 1
    assert not torch.equal(start0["state"]["model.24.m.0.weight"], end0["state"]["model.24.m.0.weight"])

    ckpt = torch.load(last, weights_only=False)
    assert ckpt["epoch"] == -1 or ckpt["epoch"] == 1  # finished (stripped) or the final epoch
    model = ckpt["ema"] or ckpt["model"]
    expected = scale_hyp_for_model(split_hyp(load_hyp(tiny_shapes / "hyp.yaml"))[1], nl=3, nc=4, imgsz=64)
    assert model.hyp == pytest.approx(expected)  # the file's loss gains (obj 1.7), scaled as YOLOv5 does
    assert torch.equal(model.model[-1].anchors.float(), end0["state"]["anchors"])
    rows = (runs[0] / "results.csv").read_text().splitlines()
    assert [r.split(",")[0].strip() for r in rows[1:]] == ["0", "1"]  # YOLOv5 counts epochs from 0


def test_device_list_launches_one_process_per_device(monkeypatch):
    """``train.py --device 0,1`` runs itself under torch.distributed.run, as a user would by hand."""
    calls = []
    monkeypatch.setattr(subprocess, "run", lambda cmd, **kw: calls.append(cmd) or subprocess.CompletedProcess(cmd, 0))
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # --device is checked before the launch
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert train.main(["--device", "0,1", "--epochs", "3"]) == 0
    cmd = calls[0]
    assert cmd[:5] == [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    assert cmd[-5:] == [str(ROOT / "train.py"), "--device", "0,1", "--epochs", "3"]


@pytest.mark.parametrize("device, n", [("", 1), ("cpu", 1), ("0", 1), ("0,1", 2), ("0,1,2,3", 4), ("0, 1", 2)])
def test_device_count(device, n):
    assert device_count(device) == n
