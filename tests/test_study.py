"""study.py: a grid of real train.py runs (models x seeds), the table and plots, the paired interval, continuation,
and the one-run-per-device scheduler (with fake launchers: no GPU needed)."""

from __future__ import annotations

import csv
import math
import sys
import threading
import time
from pathlib import Path

import pytest

import study
from tests.helpers import one_error, shapes_data
from utils import study as st

TINY = ["--cfg", "models/yolov5n.yaml", "--attention", "ECA", "--seeds", "0", "1", "--epochs", "1", "--imgsz", "64",
        "--batch-size", "8", "--workers", "0"]


class Counter:
    """A launcher that records every train.py argv and runs the real one (a subprocess) unless ``fake``."""

    def __init__(self, fake: bool = False, epochs: int = 1, delay: float = 0.0):
        self.calls: list[tuple[list[str], str | None]] = []
        self.fake, self.epochs, self.delay = fake, epochs, delay
        self.lock = threading.Lock()

    def __call__(self, argv: list[str], log: Path, gpu: str | None) -> int:
        with self.lock:
            self.calls.append((list(argv), gpu))
        if not self.fake:
            return st.launch_subprocess(argv, log, gpu)
        time.sleep(self.delay)
        fake_results(Path(argv[argv.index("--project") + 1]) / argv[argv.index("--name") + 1], self.epochs,
                     seed=int(argv[argv.index("--seed") + 1]))
        return 0

    def trained(self) -> list[str]:
        return sorted(a[a.index("--name") + 1] if "--name" in a else Path(a[1]).parent.parent.name
                      for a, _ in self.calls)


def fake_results(run: Path, epochs: int, seed: int = 0) -> None:
    """A results.csv in YOLOv5's layout (padded names), as train.py writes it."""
    run.mkdir(parents=True, exist_ok=True)
    cols = ["epoch", "train/box_loss", "train/obj_loss", "train/cls_loss", "metrics/precision", "metrics/recall",
            "metrics/mAP_0.5", "metrics/mAP_0.5:0.95"]
    lines = [",".join(f"{c:>20s}" for c in cols)]
    for e in range(epochs):
        lines.append(",".join(f"{v:>20.5g}" for v in (e, 0.1, 0.05, 0.02, 0.5, 0.5, 0.3 + 0.01 * seed + 0.01 * e,
                                                      0.2 + 0.01 * seed + 0.01 * e)))
    (run / "results.csv").write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return shapes_data(tmp_path_factory.mktemp("data"), n_train=16, n_val=8, imgsz=64)


@pytest.fixture(scope="module")
def real_study(tiny, tmp_path_factory):
    """yolov5n and yolov5n + ECA, seeds 0 and 1, one epoch at 64 px: four real train.py subprocesses."""
    project = tmp_path_factory.mktemp("study")
    argv = TINY + ["--data", str(tiny), "--project", str(project)]
    launcher = Counter()
    d = study.run(study.parse_opt(argv), launch=launcher, latency_repeats=3)
    return d, argv, launcher


def test_study_trains_every_cell_and_writes_the_table(real_study):
    d, _, launcher = real_study
    assert launcher.trained() == ["yolov5n-eca-s0", "yolov5n-eca-s1", "yolov5n-s0", "yolov5n-s1"]
    for cell in launcher.trained():
        assert (d / cell / st.DONE).is_file() and (d / cell / "weights" / "best.pt").is_file()
    assert (d / "models" / "yolov5n-eca.yaml").is_file()  # written by models/insert.py, trained with --cfg
    with open(d / "study.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == st.COLUMNS
    assert [r["model"] for r in rows] == ["yolov5n", "yolov5n-eca"] and rows[1]["module"] == "ECA"
    for r in rows:
        assert r["seeds"] == "2"
        for k in ("params", "gflops", "gflops640", "ms_cpu", "map50_mean", "map50_std", "map_mean", "map_std"):
            assert math.isfinite(float(r[k])), (k, r)
        assert float(r["params"]) > 1e6 and float(r["ms_cpu"]) > 0
    for k in ("d_map50", "d_map50_lo", "d_map50_hi", "d_map", "d_map_lo", "d_map_hi"):
        assert math.isfinite(float(rows[1][k])) and rows[0][k] == ""
    md = (d / "study.md").read_text()
    assert "| yolov5n |" in md and "| yolov5n-eca |" in md and "paired t-interval" in md
    assert "paper" not in md.splitlines()[0]  # not COCO / VisDrone: no paper columns
    for png in ("study.png", "curves.png"):
        assert (d / png).stat().st_size > 1000
    saved = __import__("yaml").safe_load((d / "study.yaml").read_text())
    assert saved["seeds"] == [0, 1] and saved["attention"] == ["ECA"] and saved["recipe"]["imgsz"] == 64


def test_same_command_continues_and_retrains_only_the_unfinished_cell(real_study):
    d, argv, _ = real_study
    again = Counter()
    assert study.run(study.parse_opt(argv), launch=again, latency_repeats=1) == d  # the same folder, nothing to train
    assert again.calls == []

    (d / "yolov5n-eca-s1" / st.DONE).unlink()  # killed after training, before the marker: recognised as finished
    again = Counter()
    study.run(study.parse_opt(argv), launch=again, latency_repeats=1)
    assert again.calls == [] and (d / "yolov5n-eca-s1" / st.DONE).is_file()

    (d / "yolov5n-eca-s1" / st.DONE).unlink()  # killed during its last epoch: no final results
    (d / "yolov5n-eca-s1" / "results.csv").unlink()
    again = Counter()
    study.run(study.parse_opt(argv), launch=again, latency_repeats=1)
    assert again.trained() == ["yolov5n-eca-s1"]
    assert (d / "yolov5n-eca-s1" / st.DONE).is_file() and len(st.read_results(d / "yolov5n-eca-s1")) == 1


def test_other_settings_start_a_new_study(tiny, tmp_path):
    argv = TINY + ["--data", str(tiny), "--project", str(tmp_path)]
    first = study.run(study.parse_opt(argv), launch=Counter(fake=True), latency_repeats=1)
    other = Counter(fake=True, epochs=2)
    second = study.run(study.parse_opt([*argv, "--epochs", "2"]), launch=other, latency_repeats=1)
    assert (first.name, second.name) == ("exp", "exp2") and len(other.calls) == 4
    assert study.run(study.parse_opt(argv), launch=Counter(fake=True), latency_repeats=1) == first
    err = pytest.raises(st.StudyError, study.run, study.parse_opt([*argv, "--epochs", "3", "--name", "exp",
                                                                   "--exist-ok"]), launch=Counter(fake=True))
    assert "other settings (recipe)" in str(err.value)


def test_interrupted_cell_resumes_from_last_pt(tmp_path, monkeypatch):
    cell = st.Cell(st.ModelSpec("yolov5n", "models/yolov5n.yaml", "", True), 3)
    settings = {"recipe": {"data": "d.yaml", "epochs": 5, "imgsz": 64, "batch_size": 2}, "workers": 0}
    fresh = st.train_argv(cell, settings, tmp_path, "cpu")
    assert fresh[:2] == ["--cfg", "models/yolov5n.yaml"] and "--seed" in fresh and fresh[-2:] == ["--device", "cpu"]
    last = tmp_path / "yolov5n-s3" / "weights" / "last.pt"
    last.parent.mkdir(parents=True)
    last.write_bytes(b"x")
    monkeypatch.setattr(st, "resumable", lambda p: Path(p) == last)
    assert st.train_argv(cell, settings, tmp_path, None) == ["--resume", str(last)]


def test_paired_interval_matches_hand_computation(monkeypatch):
    base = {0: 0.50, 1: 0.52, 2: 0.54}
    other = {0: 0.53, 1: 0.56, 2: 0.55, 7: 0.99}  # seed 7 has no baseline pair: ignored
    # d = 0.03, 0.04, 0.01: mean 0.026667, sd 0.0152753, se 0.0088192, t(0.975, 2) = 4.302653 -> half 0.037946
    m, lo, hi, n = st.paired_ci(base, other)
    assert n == 3 and m == pytest.approx(0.0266667, abs=1e-6)
    assert lo == pytest.approx(-0.011279, abs=1e-5) and hi == pytest.approx(0.064613, abs=1e-5)
    monkeypatch.setitem(sys.modules, "scipy", None)  # without scipy: the table of t quantiles
    assert st.t_quantile(2) == pytest.approx(4.3027, abs=1e-4) and st.t_quantile(40) == pytest.approx(1.96, abs=1e-3)
    m2, lo2, hi2, _ = st.paired_ci(base, other)
    assert (m2, lo2, hi2) == pytest.approx((m, lo, hi), abs=1e-5)
    assert math.isnan(st.paired_ci({0: 1.0}, {0: 2.0})[1]) and st.paired_ci({0: 1.0}, {0: 2.0})[0] == 1.0
    assert st.mean_std([1.0, 2.0, 3.0]) == (2.0, 1.0)


def test_scheduler_runs_one_cell_per_device_at_once():
    cells = [st.Cell(st.ModelSpec(f"m{i}", "x.yaml"), s) for i in range(3) for s in range(3)]
    busy: dict[str, int] = {}
    active, peak, ran = [0], [0], []
    lock = threading.Lock()

    def launch(cell, device):
        with lock:
            assert busy.get(device, 0) == 0, f"two runs on device {device}"
            busy[device] = 1
            active[0] += 1
            peak[0] = max(peak[0], active[0])
            ran.append(cell.name)
        time.sleep(0.05)
        with lock:
            busy[device] = 0
            active[0] -= 1
        return 0

    codes = st.schedule(cells, ["0", "1", "2", "3"], launch)
    assert peak[0] == 4 and sorted(ran) == sorted(c.name for c in cells) and set(codes.values()) == {0}
    ran.clear()
    st.schedule(cells, [None], launch)  # one device: one after another, in order
    assert ran == [c.name for c in cells]


def test_study_on_several_devices_gives_each_run_one_gpu(tiny, tmp_path, monkeypatch):
    monkeypatch.setattr("utils.cli.check_device", lambda *a, **k: None)  # fake GPUs 0 and 1 on this CPU machine
    launcher = Counter(fake=True, delay=0.5)
    argv = TINY + ["--data", str(tiny), "--project", str(tmp_path), "--device", "0,1"]
    study.run(study.parse_opt(argv), launch=launcher, latency_repeats=1)
    assert len(launcher.calls) == 4 and {g for _, g in launcher.calls} == {"0", "1"}
    assert all(a[-2:] == ["--device", "0"] for a, _ in launcher.calls)  # the one GPU CUDA_VISIBLE_DEVICES shows


def test_ray_missing_is_one_error(tiny, tmp_path, capsys):
    try:
        import ray  # noqa: F401
        pytest.skip("Ray is installed")
    except ImportError:
        pass
    line = one_error(study.main, TINY + ["--data", str(tiny), "--project", str(tmp_path), "--ray"], capsys)
    assert "pip install -r requirements-ray.txt" in line and not list(tmp_path.iterdir())


def test_paper_numbers_beside_on_coco():
    assert st.paper_key("data/coco.yaml") == "coco" and st.paper_key("VisDrone.yaml") == "visdrone"
    assert st.paper_key("shapes.yaml") is None
    specs = [st.ModelSpec("yolov5s", "a", "", True), st.ModelSpec("yolov5s-ema", "b", "EMA")]
    res = {"yolov5s": {0: {"map50": 0.5, "map": 0.3}, 1: {"map50": 0.52, "map": 0.31}},
           "yolov5s-ema": {0: {"map50": 0.51, "map": 0.32}, 1: {"map50": 0.54, "map": 0.32}}}
    rows = st.table_rows(specs, res, {}, "coco")
    assert rows[1]["paper_map"] == 38.4 and rows[0]["paper_params"] == 7.23
    assert rows[1]["d_map50"] == pytest.approx(1.5) and rows[1]["map_mean"] == pytest.approx(32.0)
    settings = {"recipe": {"data": "coco.yaml", "epochs": 300, "imgsz": 640, "batch_size": 64}, "seeds": [0, 1]}
    md = st.markdown(rows, settings, "coco")
    assert "paper mAP@.5:.95" in md and "| 38.4 |" in md and "GFLOPs@640" in md
    assert st.module_of("yolov5s-ema") == "EMA" and st.module_of("yolov5s") == ""


def test_failed_run_is_reported_and_retried_by_the_same_command(tiny, tmp_path):
    argv = TINY + ["--data", str(tiny), "--project", str(tmp_path)]

    class Failing(Counter):
        def __call__(self, argv, log, gpu):
            if "yolov5n-eca-s0" in argv:
                self.calls.append((list(argv), gpu))
                return 1
            return super().__call__(argv, log, gpu)

    with pytest.raises(st.StudyError, match=r"1 run\(s\) failed: yolov5n-eca-s0"):
        study.run(study.parse_opt(argv), launch=Failing(fake=True), latency_repeats=1)
    d = tmp_path / "exp"
    assert (d / "study.md").is_file() and "| yolov5n-eca | " in (d / "study.md").read_text()  # the table so far
    again = Counter(fake=True)
    assert study.run(study.parse_opt(argv), launch=again, latency_repeats=1) == d
    assert again.trained() == ["yolov5n-eca-s0"]


def test_unknown_module_is_one_error_before_any_folder(tiny, tmp_path, capsys):
    argv = ["--attention", "NoSuchAttention", "--data", str(tiny), "--project", str(tmp_path)]
    line = one_error(study.main, argv, capsys)
    assert "NoSuchAttention" in line and "known modules" in line and not list(tmp_path.iterdir())
    line = one_error(study.main, ["--attention", "EMA@99", "--data", str(tiny), "--project", str(tmp_path)], capsys)
    assert "99" in line and not list(tmp_path.iterdir())
