"""Attention studies (``study.py``): a grid of ordinary train.py runs, models x seeds, and the table a paper prints.

- **Grid**: the base model (``--cfg``, the baseline), each ``--attention`` spec inserted into it by
  ``models/insert.py`` (exactly what ``train.py --attention`` does: the YAML is written once into the study folder and
  every seed trains it with ``--cfg``), and any further ``--cfg`` YAMLs; each model x ``--seeds``. A cell is one
  ``train.py`` subprocess, its folder ``<study>/<model>-s<seed>/`` and its log ``<model>-s<seed>.log`` next to it.
- **Scheduling**: one run after another; with ``--device 0,1,2,3`` one run per device at once (each subprocess sees
  one GPU through ``CUDA_VISIBLE_DEVICES`` and trains on ``--device 0``); with ``--ray`` each run is a Ray task asking
  for one GPU (or one CPU when the cluster has no GPU).
- **Continuing**: a cell is done when its folder holds the ``done`` marker the study writes after the run ended with
  its final epoch in ``results.csv``. Running the same command again continues the newest ``<project>/<name>*``
  whose ``study.yaml`` records the same settings: done cells are kept, an interrupted one resumes from its
  ``weights/last.pt`` (``train.py --resume``) and one without a resumable checkpoint starts again from scratch.
- **Table**: parameters and GFLOPs of each model (built for the data's classes), latency measured here (batch 1, the
  study's image size, CPU fp32; CUDA fp16 too when there is a GPU), mAP@.5 and mAP@.5:.95 as mean ± std over seeds,
  and the difference to the baseline with a 95% paired t-interval over the seeds both have; the paper's Table 2
  beside them on COCO and VisDrone. Written as ``study.md``, ``study.csv``, ``study.png`` and ``curves.png``.
"""

from __future__ import annotations

import csv
import math
import os
import queue
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import yaml

ROOT = Path(__file__).resolve().parents[1]
PREFIX = "study: "
DONE = "done"  # marker file of a finished cell
MAP50, MAP = "metrics/mAP_0.5", "metrics/mAP_0.5:0.95"

# The EMA paper's Table 2 (TABLE2.md): params (M), GFLOPs at 640, mAP@.5, mAP@.5:.95 (percent), by module.
PAPER_TABLE2: dict[str, dict[str, tuple[float, float, float, float]]] = {
    "coco": {  # YOLOv5s
        "": (7.23, 16.5, 56.0, 37.2), "CBAM": (7.27, 16.6, 57.1, 37.7), "SA": (7.23, 16.5, 56.8, 37.4),
        "ECA": (7.23, 16.5, 57.1, 37.6), "CA": (7.26, 16.50, 57.5, 38.1), "EMA": (7.24, 16.53, 57.8, 38.4),
    },
    "visdrone": {  # YOLOv5x with a P2 head
        "": (90.96, 314.2, 49.29, 30.0), "CBAM": (91.31, 315.1, 49.40, 30.1), "CA": (91.28, 315.2, 49.30, 30.1),
        "EMA": (91.18, 315.0, 49.70, 30.4),
    },
}
PAPER_BASE = {"coco": "YOLOv5s", "visdrone": "YOLOv5x (P2 head)"}

# Two-sided 97.5% quantiles of Student's t, df 1..30 (used when scipy is not installed; above 30 the normal's 1.96).
T975 = (12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281, 2.2010, 2.1788, 2.1604,
        2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860, 2.0796, 2.0739, 2.0687, 2.0639, 2.0595, 2.0555,
        2.0518, 2.0484, 2.0452, 2.0423)


class StudyError(ValueError):
    """A study that cannot start or continue; the message names the flag or file and what to do."""


# ----------------------------------------------------------------------------------------------------
# statistics
# ----------------------------------------------------------------------------------------------------

def t_quantile(df: int, conf: float = 0.95) -> float:
    """Two-sided ``conf`` quantile of Student's t with ``df`` degrees of freedom (scipy if installed, else a table)."""
    if df < 1:
        return math.nan
    try:
        from scipy import stats
    except ImportError:
        if abs(conf - 0.95) > 1e-9:
            raise StudyError(f"a {conf:.0%} interval needs scipy (pip install scipy); without it only 95%") from None
        return T975[df - 1] if df <= len(T975) else 1.959964
    return float(stats.t.ppf(0.5 + conf / 2, df))


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof 1; nan for fewer than two values)."""
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else math.nan


def paired_ci(base: dict[int, float], other: dict[int, float], conf: float = 0.95) -> tuple[float, float, float, int]:
    """Paired t-interval of ``other - base`` over the seeds both have: (mean difference, low, high, pairs).

    d_s = other[s] - base[s]; mean ± t_{(1+conf)/2, n-1} · sd(d) / sqrt(n). With one pair the interval is nan.
    """
    seeds = sorted(set(base) & set(other))
    d = [other[s] - base[s] for s in seeds]
    n = len(d)
    if n == 0:
        return math.nan, math.nan, math.nan, 0
    m = statistics.fmean(d)
    if n < 2:
        return m, math.nan, math.nan, n
    half = t_quantile(n - 1, conf) * statistics.stdev(d) / math.sqrt(n)
    return m, m - half, m + half, n


# ----------------------------------------------------------------------------------------------------
# the grid
# ----------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ModelSpec:
    """One row of the study: a name, the YAML it trains (written into the study for ``--attention``), its module."""

    name: str
    cfg: str
    module: str = ""  # attention module name ('' for a plain model), to find the paper's row
    baseline: bool = False


@dataclass(frozen=True)
class Cell:
    model: ModelSpec
    seed: int

    @property
    def name(self) -> str:
        return f"{self.model.name}-s{self.seed}"


def safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")


def module_of(stem: str) -> str:
    """The attention module a YAML's name says it holds (``yolov5s-ema`` -> ``EMA``), '' if none."""
    from models.attention import ATTENTION

    tail = stem.rsplit("-", 1)[-1].lower() if "-" in stem else ""
    return next((k for k in ATTENTION if k.lower() == tail), "")


def model_specs(cfgs: Sequence[str], attention: Sequence[str], folder: Path) -> list[ModelSpec]:
    """The study's models: ``cfgs[0]`` (the baseline), each attention spec on it (YAMLs written to ``folder``),
    then ``cfgs[1:]``. Names must be distinct."""
    from models.insert import parse_attention_spec, write_attention_cfg
    from models.yolo import resolve_cfg

    if not cfgs:
        raise StudyError("--cfg: name at least the baseline model, e.g. --cfg models/yolov5s.yaml")
    base = resolve_cfg(cfgs[0])
    specs = [ModelSpec(base.stem, str(base), module_of(base.stem), True)]
    for spec in attention:
        module, layers = parse_attention_spec(spec)
        name = f"{base.stem}-{module.lower()}" + (f"@{','.join(map(str, layers))}" if layers else "")
        file = folder / "models" / f"{safe_name(name)}.yaml"
        write_attention_cfg(base, spec, file)
        specs.append(ModelSpec(name, str(file), module))
    for c in cfgs[1:]:
        p = resolve_cfg(c)
        specs.append(ModelSpec(p.stem, str(p), module_of(p.stem)))
    names = [s.name for s in specs]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise StudyError(f"--cfg/--attention: model {', '.join(dup)} is in the study twice; name each once")
    return specs


def cells(specs: Sequence[ModelSpec], seeds: Sequence[int]) -> list[Cell]:
    """Seed-major order: every model of seed 0 first, so a study stopped early already has complete pairs."""
    return [Cell(m, s) for s in seeds for m in specs]


def train_argv(cell: Cell, settings: dict, study_dir: Path, device: str | None) -> list[str]:
    """train.py flags of one cell: a fresh run in ``study_dir/<cell>``, or ``--resume`` of its last.pt."""
    last = study_dir / safe_name(cell.name) / "weights" / "last.pt"
    if resumable(last):
        argv = ["--resume", str(last)]
    else:
        r = settings["recipe"]
        argv = ["--cfg", cell.model.cfg, "--data", r["data"], "--epochs", str(r["epochs"]), "--imgsz", str(r["imgsz"]),
                "--batch-size", str(r["batch_size"]), "--seed", str(cell.seed), "--workers", str(settings["workers"]),
                "--project", str(study_dir), "--name", safe_name(cell.name), "--exist-ok"]
        for flag in ("hyp", "optimizer", "weights"):
            if r.get(flag) is not None:
                argv += [f"--{flag}", str(r[flag])]
        argv += list(r.get("extra") or [])
    return argv + (["--device", device] if device else [])


def resumable(last: Path) -> bool:
    if not last.is_file():
        return False
    from utils.checkpoint import check_resumable

    try:
        check_resumable(last)
    except Exception:  # a finished, stripped or truncated checkpoint: not resumable
        return False
    return True


# ----------------------------------------------------------------------------------------------------
# results of a run
# ----------------------------------------------------------------------------------------------------

def read_results(run: Path) -> list[dict[str, float]]:
    """The rows of a run's ``results.csv`` (YOLOv5's padded column names stripped), [] when there is none."""
    from utils.results import read_rows  # the engine's logger comes with it: imported when a study reads results

    return read_rows(run / "results.csv")


def final_metrics(run: Path) -> dict[str, float] | None:
    """mAP@.5 and mAP@.5:.95 of the epoch of best fitness (0.1·mAP@.5 + 0.9·mAP@.5:.95), which is the epoch whose
    weights ``best.pt`` holds and YOLOv5's final validation reports; None when the run has no validated epoch."""
    rows = [r for r in read_results(run) if all(math.isfinite(r.get(k, math.nan)) for k in (MAP, MAP50))]
    if not rows:
        return None
    best = max(rows, key=lambda r: 0.1 * r[MAP50] + 0.9 * r[MAP])
    return {"map50": best[MAP50], "map": best[MAP], "epoch": int(best.get("epoch", -1)), "epochs": len(rows)}


def is_done(run: Path) -> bool:
    return (run / DONE).is_file()


def mark_done(run: Path, epochs: int) -> bool:
    """Write the ``done`` marker when the run's results.csv reached its final epoch; whether it did."""
    m = final_metrics(run)
    if m is None or m["epochs"] < epochs:
        return False
    (run / DONE).write_text(yaml.safe_dump(m, sort_keys=False), encoding="utf-8")
    return True


# ----------------------------------------------------------------------------------------------------
# launching and scheduling
# ----------------------------------------------------------------------------------------------------

def launch_subprocess(argv: list[str], log: Path, gpu: str | None = None) -> int:
    """Run ``python train.py argv`` with its output in ``log``; ``gpu`` set as the only visible CUDA device."""
    env = dict(os.environ)
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpu
    with open(log, "ab") as fh:
        fh.write(f"$ train.py {' '.join(argv)}\n".encode())
        fh.flush()
        return subprocess.run([sys.executable, str(ROOT / "train.py"), *argv], stdout=fh, stderr=subprocess.STDOUT,
                              env=env, cwd=ROOT).returncode


Launcher = Callable[[Cell, "str | None"], int]


def schedule(todo: Sequence[Cell], devices: Sequence[str | None], launch: Launcher) -> dict[str, int]:
    """Run every cell through ``launch(cell, device)``, one at a time per device, all devices at once; returns each
    cell's exit code. A Ctrl-C lets the running cells end with it (they get the same signal) and re-raises."""
    work: queue.Queue[Cell] = queue.Queue()
    for c in todo:
        work.put(c)
    codes: dict[str, int] = {}
    errors: list[BaseException] = []

    def worker(device: str | None) -> None:
        while not errors:
            try:
                cell = work.get_nowait()
            except queue.Empty:
                return
            try:
                codes[cell.name] = launch(cell, device)
            except BaseException as e:  # noqa: BLE001 - handed to the main thread
                errors.append(e)
                return

    if len(devices) == 1:
        worker(devices[0])
    else:
        threads = [threading.Thread(target=worker, args=(d,), daemon=True) for d in devices]
        for t in threads:
            t.start()
        for t in threads:
            while t.is_alive():
                t.join(0.2)
    if errors:
        raise errors[0]
    return codes


def ray_schedule(todo: Sequence[Cell], argv_of: Callable[[Cell], list[str]], logs: Callable[[Cell], Path],
                 device: str) -> dict[str, int]:
    """Each cell a Ray task asking for one GPU (one CPU when the cluster has none or ``--device cpu``)."""
    import ray

    ray.init(ignore_reinit_error=True)  # a cluster at RAY_ADDRESS or started with `ray start`, else a local one
    gpus = 0 if str(device).lower() == "cpu" or not ray.cluster_resources().get("GPU") else 1

    @ray.remote(num_gpus=gpus, num_cpus=1, max_retries=0)
    def train_task(argv: list[str], log: str) -> int:
        gpu = ",".join(str(i) for i in ray.get_gpu_ids()) or None
        return launch_subprocess(argv + (["--device", "0"] if gpu else ["--device", "cpu"]), Path(log), gpu)

    refs = {c.name: train_task.remote(argv_of(c), str(logs(c))) for c in todo}
    return {name: int(ray.get(ref)) for name, ref in refs.items()}


def check_ray() -> None:
    try:
        import ray  # noqa: F401
    except ImportError as e:
        raise StudyError(f"--ray needs Ray ({e}): pip install -r requirements-ray.txt") from None


# ----------------------------------------------------------------------------------------------------
# the study folder
# ----------------------------------------------------------------------------------------------------

def study_dir(base: Path, settings: dict, exist_ok: bool = False) -> Path:
    """The newest of ``base``, ``base2``… whose ``study.yaml`` holds ``settings`` (locked), else a new folder."""
    from utils.engine import increment_dir
    from utils.rundir import lock_run_dir

    found = [p for p in base.parent.glob(f"{base.name}*") if re.fullmatch(re.escape(base.name) + r"\d*", p.name)]
    for d in [base] if exist_ok else sorted(found, key=lambda p: int(p.name[len(base.name):] or 1), reverse=True):
        file = d / "study.yaml"
        if file.is_file():
            saved = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
            if {k: v for k, v in saved.items() if k != "workers"} == {k: v for k, v in settings.items()
                                                                       if k != "workers"}:
                lock_run_dir(d, what="study", hint="that study is still running; wait for it to end, or start "
                             "another with a new --name")
                return d
            if exist_ok:
                differ = sorted(k for k in set(saved) | set(settings) if saved.get(k) != settings.get(k))
                raise StudyError(f"{file}: this study was started with other settings ({', '.join(differ)}); "
                                 "continue it with its own flags, or start another with a new --name")
    d = increment_dir(base, exist_ok)  # created and locked (utils/rundir.py)
    (d / "study.yaml").write_text(yaml.safe_dump(settings, sort_keys=False), encoding="utf-8")
    return d


def data_nc(data: str) -> int:
    """The class count of a data YAML (``nc`` or the length of ``names``), without downloading anything."""
    from utils.engine import resolve_data

    d = yaml.safe_load(Path(resolve_data(data)).read_text(encoding="utf-8")) or {}
    if "nc" in d:
        return int(d["nc"])
    names = d.get("names")
    if not names:
        raise StudyError(f"--data {data}: the YAML has neither 'nc' nor 'names'")
    return len(names)


def paper_key(data: str) -> str | None:
    stem = Path(data).stem.lower()
    return stem if stem in PAPER_TABLE2 else None


# ----------------------------------------------------------------------------------------------------
# cost: parameters, GFLOPs, latency
# ----------------------------------------------------------------------------------------------------

def model_costs(specs: Sequence[ModelSpec], nc: int, imgsz: int, budget_s: float = 20.0,
                repeats: int | None = None) -> dict[str, dict[str, float]]:
    """Per model: parameters (as built), GFLOPs at ``imgsz`` and at 640, and median latency in ms at batch 1
    (CPU fp32, and CUDA fp16 when a GPU is visible), all models timed interleaved in one process."""
    import torch

    from bench.timing import interleaved, median_ms, synchronizer
    from models.yolo import Model, count_flops

    out: dict[str, dict[str, float]] = {}
    built: dict[str, Any] = {}
    for s in specs:
        m = Model(s.cfg, nc=nc, verbose=False).eval()
        out[s.name] = {"params": float(sum(p.numel() for p in m.parameters())),
                       "gflops": count_flops(m, imgsz), "gflops640": count_flops(m, 640) if imgsz != 640 else math.nan}
        built[s.name] = m.fuse(verbose=False)
    if math.isnan(next(iter(out.values()))["gflops640"]):
        for v in out.values():
            v["gflops640"] = v["gflops"]
    variants = [("cpu", torch.device("cpu"), torch.float32)]
    if torch.cuda.is_available():
        variants.append(("cuda", torch.device("cuda:0"), torch.float16))
    for key, dev, dtype in variants:
        im = torch.rand(1, 3, imgsz, imgsz, device=dev, dtype=dtype)
        models = {n: (m.to(dev).to(dtype)) for n, m in built.items()}

        def call(m):
            def f():
                with torch.inference_mode():
                    m(im)
            return f

        times = interleaved({n: call(m) for n, m in models.items()}, repeats=repeats, budget_s=budget_s,
                            sync=synchronizer(dev), label=f"study latency {key}")
        for n, ts in times.items():
            out[n][f"ms_{key}"] = median_ms(ts)
        for m in models.values():
            m.to("cpu").float()
    return out


# ----------------------------------------------------------------------------------------------------
# the table and the plots
# ----------------------------------------------------------------------------------------------------

COLUMNS = ["model", "module", "seeds", "params", "gflops", "gflops640", "ms_cpu", "ms_cuda", "map50_mean",
           "map50_std", "map_mean", "map_std", "d_map50", "d_map50_lo", "d_map50_hi", "d_map", "d_map_lo", "d_map_hi",
           "paper_params", "paper_gflops", "paper_map50", "paper_map"]


def table_rows(specs: Sequence[ModelSpec], results: dict[str, dict[int, dict[str, float]]],
               costs: dict[str, dict[str, float]], paper: str | None) -> list[dict[str, Any]]:
    """One row per model (COLUMNS); mAPs in percent; differences paired with the baseline by seed."""
    base = specs[0].name
    rows = []
    for s in specs:
        res = results.get(s.name, {})
        row: dict[str, Any] = {"model": s.name, "module": s.module or "-", "seeds": len(res)}
        row.update({k: costs.get(s.name, {}).get(k, math.nan) for k in ("params", "gflops", "gflops640", "ms_cpu",
                                                                          "ms_cuda")})
        for k in ("map50", "map"):
            mean, std = mean_std([100 * r[k] for r in res.values()])
            row[f"{k}_mean"], row[f"{k}_std"] = mean, std
            if s.name == base:
                row[f"d_{k}"] = row[f"d_{k}_lo"] = row[f"d_{k}_hi"] = math.nan
            else:
                d, lo, hi, _ = paired_ci({sd: 100 * r[k] for sd, r in results.get(base, {}).items()},
                                         {sd: 100 * r[k] for sd, r in res.items()})
                row[f"d_{k}"], row[f"d_{k}_lo"], row[f"d_{k}_hi"] = d, lo, hi
        p = PAPER_TABLE2[paper].get(s.module) if paper else None
        for k, v in zip(("paper_params", "paper_gflops", "paper_map50", "paper_map"), p or (math.nan,) * 4):
            row[k] = v
        rows.append(row)
    return rows


def write_csv(rows: list[dict[str, Any]], file: Path) -> Path:
    with open(file, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, COLUMNS)
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) and not math.isnan(v) else
                            "" if isinstance(v, float) else v) for k, v in r.items()})
    return file


def _f(v: float, fmt: str = ".1f") -> str:
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)


def _pm(mean: float, std: float) -> str:
    return _f(mean, ".2f") if math.isnan(std) else f"{mean:.2f} ± {std:.2f}"


def _diff(d: float, lo: float, hi: float) -> str:
    if math.isnan(d):
        return "—"
    return f"{d:+.2f}" + ("" if math.isnan(lo) else f" [{lo:+.2f}, {hi:+.2f}]")


def markdown(rows: list[dict[str, Any]], settings: dict, paper: str | None, elapsed_s: float | None = None) -> str:
    """The table as Markdown, with a footer saying what each column is and which test the intervals are."""
    r = settings["recipe"]
    cuda = any(not math.isnan(x["ms_cuda"]) for x in rows)
    same = r["imgsz"] == 640
    head = ["model", "params (M)", f"GFLOPs@{r['imgsz']}"] + ([] if same else ["GFLOPs@640"]) + ["CPU ms"] + \
        (["GPU fp16 ms"] if cuda else []) + ["mAP@.5", "mAP@.5:.95", "Δ mAP@.5 [95% CI]", "Δ mAP@.5:.95 [95% CI]"]
    if paper:
        head += ["paper params", "paper GFLOPs", "paper mAP@.5", "paper mAP@.5:.95"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for x in rows:
        cells_ = [x["model"], _f(x["params"] / 1e6, ".3f"), _f(x["gflops"], ".2f")] + \
            ([] if same else [_f(x["gflops640"], ".2f")]) + [_f(x["ms_cpu"])] + ([_f(x["ms_cuda"], ".2f")] if cuda
                                                                                 else []) + \
            [_pm(x["map50_mean"], x["map50_std"]), _pm(x["map_mean"], x["map_std"]),
             _diff(x["d_map50"], x["d_map50_lo"], x["d_map50_hi"]), _diff(x["d_map"], x["d_map_lo"], x["d_map_hi"])]
        if paper:
            cells_ += [_f(x["paper_params"], ".2f"), _f(x["paper_gflops"], ".2f"), _f(x["paper_map50"], ".2f"),
                       _f(x["paper_map"], ".1f")]
        lines.append("| " + " | ".join(map(str, cells_)) + " |")
    seeds = settings["seeds"]
    foot = [
        "",
        f"Data {Path(r['data']).name}, {r['epochs']} epochs at {r['imgsz']} px, batch {r['batch_size']}, hyp "
        f"{r.get('hyp') or 'train.py default for the data'}, seeds {', '.join(map(str, seeds))}. mAP in percent: "
        "mean ± sample std over seeds, each seed's value from its epoch of best fitness (0.1·mAP@.5 + "
        "0.9·mAP@.5:.95, the weights of best.pt).",
        f"Δ: difference to the baseline ({rows[0]['model']}) with a 95% paired t-interval over seeds (two-sided "
        "Student t on the per-seed differences, same seed baseline vs model, df = pairs − 1; no interval with one "
        "pair).",
        "Params as built for the data's classes; GFLOPs by thop (2 × MACs); latency: median of interleaved runs, batch "
        f"1, {r['imgsz']} px, fused Conv+BN, PyTorch CPU fp32" + (", CUDA fp16" if cuda else "") + " on this machine.",
    ]
    if paper:
        foot.append(f"paper: the EMA paper's Table 2 ({PAPER_BASE[paper]}, 300 epochs at 640, GFLOPs at 640), by "
                    "attention module.")
    if elapsed_s is not None:
        foot.append(f"Wall time of this call of study.py: {elapsed_s / 60:.1f} min.")
    return "\n".join(lines + foot) + "\n"


def plot_study(rows: list[dict[str, Any]], file: Path) -> Path:
    """mAP@.5:.95 (mean ± std over seeds) against CPU latency and against GFLOPs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, key, label in ((axes[0], "ms_cpu", "CPU latency (ms, batch 1)"), (axes[1], "gflops", "GFLOPs")):
        for x in rows:
            y, e = x["map_mean"], x["map_std"]
            ax.errorbar(x[key], y, yerr=None if math.isnan(e) else e, fmt="o", capsize=4, label=x["model"])
            ax.annotate(x["model"], (x[key], y), textcoords="offset points", xytext=(5, 5), fontsize=8)
        ax.set_xlabel(label)
        ax.set_ylabel("mAP@.5:.95 (%)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(file, dpi=120)
    plt.close(fig)
    return file


def plot_curves(runs: dict[str, Path], file: Path) -> Path:
    """Every run's training curves overlaid: train loss (box + obj + cls), mAP@.5, mAP@.5:.95; a colour per model,
    a line style per seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    models = list(dict.fromkeys(n.rsplit("-s", 1)[0] for n in runs))  # the table's order
    colours = {m: f"C{i % 10}" for i, m in enumerate(models)}
    styles = ["-", "--", ":", "-."]
    for name, run in runs.items():
        model, seed = name.rsplit("-s", 1)
        rows = read_results(run)
        if not rows:
            continue
        ep = [r.get("epoch", i) for i, r in enumerate(rows)]
        loss = [sum(r.get(f"train/{k}_loss", 0.0) for k in ("box", "obj", "cls")) for r in rows]
        style = dict(color=colours[model], ls=styles[int(seed) % len(styles)] if seed.isdigit() else "-",
                     label=name, marker="." if len(rows) < 3 else None)
        axes[0].plot(ep, loss, **style)
        axes[1].plot(ep, [100 * r.get(MAP50, math.nan) for r in rows], **style)
        axes[2].plot(ep, [100 * r.get(MAP, math.nan) for r in rows], **style)
    for ax, t in zip(axes, ("train loss (box + obj + cls)", "mAP@.5 (%)", "mAP@.5:.95 (%)")):
        ax.set_xlabel("epoch")
        ax.set_title(t)
        ax.grid(alpha=0.3)
    axes[2].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(file, dpi=120)
    plt.close(fig)
    return file


# ----------------------------------------------------------------------------------------------------
# the study
# ----------------------------------------------------------------------------------------------------

def log(msg: str) -> None:
    print(f"{PREFIX}{msg}", file=sys.stderr, flush=True)


def run_study(settings: dict, project: Path, name: str = "exp", exist_ok: bool = False, device: str = "",
              ray: bool = False, launch: Callable[[list[str], Path, str | None], int] | None = None,
              latency_budget: float = 20.0, latency_repeats: int | None = None) -> Path:
    """Run (or continue) the study ``settings`` (see ``study.py``); returns its folder.

    ``launch(argv, log, gpu)`` runs one train.py (default: a subprocess); the tests count and fake it.
    """
    from models.insert import attention_cfg
    from utils.rundir import release_run_dir

    if ray:
        check_ray()
    for spec in settings["attention"]:  # a bad module name or site fails here, before a folder is made
        attention_cfg(settings["cfgs"][0], spec)
    t0 = time.time()
    d = study_dir(project / name, settings, exist_ok)
    try:
        specs = model_specs(settings["cfgs"], settings["attention"], d)
        grid = cells(specs, settings["seeds"])
        epochs = settings["recipe"]["epochs"]
        folder = {c.name: d / safe_name(c.name) for c in grid}
        for c in grid:  # finished, but killed before the marker was written
            if not is_done(folder[c.name]) and not resumable(folder[c.name] / "weights" / "last.pt"):
                mark_done(folder[c.name], epochs)
        todo = [c for c in grid if not is_done(folder[c.name])]
        log(f"{d}: {len(specs)} models x {len(settings['seeds'])} seeds, {len(grid) - len(todo)} runs done, "
            f"{len(todo)} to train")
        launch = launch or launch_subprocess

        def argv_of(c: Cell, dev: str | None) -> list[str]:
            run = folder[c.name]
            if run.exists() and not resumable(run / "weights" / "last.pt"):
                shutil.rmtree(run)  # an unfinished run with nothing to resume from: start it again
            return train_argv(c, settings, d, dev)

        def logs(c: Cell) -> Path:
            return d / f"{safe_name(c.name)}.log"

        devices = [x.strip() for x in str(device or "").split(",") if x.strip()]
        gpus = [x for x in devices if x.lower() not in ("cpu", "mps")]

        def one(c: Cell, dev: str | None) -> int:
            argv = argv_of(c, "0" if dev is not None else (device or None))
            log(f"{c.name}: train.py {' '.join(argv)}" + (f" (CUDA_VISIBLE_DEVICES={dev})" if dev else ""))
            rc = launch(argv, logs(c), dev)
            ok = rc == 0 and mark_done(folder[c.name], epochs)
            log(f"{c.name}: " + ("done" if ok else f"FAILED (exit code {rc}; see {logs(c)})"))
            return rc

        if todo and ray:
            codes = ray_schedule(todo, lambda c: argv_of(c, None), logs, device)
            for c in todo:
                mark_done(folder[c.name], epochs)
        elif todo:
            codes = schedule(todo, gpus if len(gpus) > 1 else [None], one)
        else:
            codes = {}
        failed = [n for n, rc in codes.items() if rc != 0 or not is_done(folder[n])]
        report(d, specs, grid, folder, settings, latency_budget, latency_repeats, time.time() - t0)
        if failed:
            raise StudyError(f"{len(failed)} run(s) failed: {', '.join(failed)} (logs in {d}); run the same command "
                             "again to retry them")
    finally:
        release_run_dir(d)
    return d


def report(d: Path, specs: Sequence[ModelSpec], grid: Iterable[Cell], folder: dict[str, Path], settings: dict,
           latency_budget: float, latency_repeats: int | None, elapsed_s: float | None) -> str:
    """Write study.md, study.csv, study.png and curves.png from the finished runs; return the Markdown."""
    results: dict[str, dict[int, dict[str, float]]] = {}
    for c in grid:
        m = final_metrics(folder[c.name]) if is_done(folder[c.name]) else None
        if m is not None:
            results.setdefault(c.model.name, {})[c.seed] = m
    r = settings["recipe"]
    log("measuring parameters, GFLOPs and latency")
    costs = model_costs(specs, data_nc(r["data"]), r["imgsz"], latency_budget, latency_repeats)
    paper = paper_key(r["data"])
    rows = table_rows(specs, results, costs, paper)
    md = markdown(rows, settings, paper, elapsed_s)
    (d / "study.md").write_text(md, encoding="utf-8")
    write_csv(rows, d / "study.csv")
    plot_study(rows, d / "study.png")
    plot_curves({c.name: folder[c.name] for c in grid if folder[c.name].exists()}, d / "curves.png")
    print(md)
    log(f"results in {d} (study.md, study.csv, study.png, curves.png)")
    return md
