"""Benchmark the Table 2 models side by side with the EMA paper: size, GFLOPs, latency, memory, training speed, mAP.

Usage:
    python benchmarks.py                                   # every Table 2 model: CPU, 640x640, batch 1, PyTorch fp32
    python benchmarks.py --models s                        # a group (s or x-p2), or names, YAMLs, .pt weights
    python benchmarks.py --models yolov5s-ema --train      # + training step (forward + backward, batch 8, 320)
    python benchmarks.py --models s --formats onnx,openvino  # + ONNX Runtime / OpenVINO fp32, bf16, INT8 latency
    python benchmarks.py --map runs/train/exp/weights/best.pt --data coco.yaml   # + measured mAP next to the paper's
    python benchmarks.py --formats openvino-int8 --map best.pt  # + each runtime's mAP next to PyTorch's
    python benchmarks.py --modules                         # attention modules alone vs their reference formulas
    python benchmarks.py --device 0 --half                 # CUDA fp16

Each row is one model; ``x base`` columns divide by the baseline of the row's group (the same model without its
attention suffix, e.g. yolov5s for yolov5s-ema), which is benchmarked too when not asked for. All timings of one
table are taken in one process, interleaved round-robin (every model runs once per round, faster groups several
times), so machine drift hits every row alike; reported latencies are medians. The table goes to the screen as
Markdown and to ``runs/benchmarks/exp*/`` as ``benchmarks.csv`` and ``benchmarks.md`` (``deploy.csv`` with
``--formats``: one row per model and runtime variant of ``utils/deploy.py``).

Peak memory: bytes of tensors alive at the peak of one forward pass beyond those alive before it (so activations
and workspaces; weights excluded), from PyTorch's allocator events on CPU or ``max_memory_allocated`` on CUDA.

Allocator: on Linux/glibc the benchmark first tells malloc to keep freed memory (``utils/allocator.py``, as
train.py, val.py and detect.py do on CPU). With glibc's defaults every large tensor is paged in afresh by the
kernel, which on CPU costs more than some of the layers themselves (about 20% of a yolov5s forward on the machine
of the README's table) and penalises every extra layer; ``--stock-malloc`` measures with the defaults.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import math
import os
import platform
import re
import statistics
import sys
import time
from collections import Counter
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, Callable, Iterable

ROOT = Path(__file__).resolve().parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from utils import allocator, deploy, offline  # noqa: E402  (offline before ultralytics is imported)

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

from models.attention import build_attention  # noqa: E402
from models.yolo import Model, count_flops, resolve_cfg  # noqa: E402
from utils.module_cost import catalogue_names, module_cost, trains_at  # noqa: E402

offline.configure()

# ----------------------------------------------------------------------------------------------------
# The paper's Table 2 (params in millions, GFLOPs at 640x640, mAP in %)
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PaperRow:
    data: str
    params_m: float
    gflops: float
    map50: float
    map50_95: float


PAPER: dict[str, PaperRow] = {
    "yolov5s": PaperRow("COCO", 7.23, 16.5, 56.0, 37.2),
    "yolov5s-cbam": PaperRow("COCO", 7.27, 16.6, 57.1, 37.7),
    "yolov5s-sa": PaperRow("COCO", 7.23, 16.5, 56.8, 37.4),
    "yolov5s-eca": PaperRow("COCO", 7.23, 16.5, 57.1, 37.6),
    "yolov5s-ca": PaperRow("COCO", 7.26, 16.50, 57.5, 38.1),
    "yolov5s-ema": PaperRow("COCO", 7.24, 16.53, 57.8, 38.4),
    "yolov5x-p2": PaperRow("VisDrone", 90.96, 314.2, 49.29, 30.0),
    "yolov5x-p2-cbam": PaperRow("VisDrone", 91.31, 315.1, 49.40, 30.1),
    "yolov5x-p2-ca": PaperRow("VisDrone", 91.28, 315.2, 49.30, 30.1),
    "yolov5x-p2-ema": PaperRow("VisDrone", 91.18, 315.0, 49.70, 30.4),
}
GROUPS: dict[str, list[str]] = {
    "s": ["yolov5s", "yolov5s-cbam", "yolov5s-sa", "yolov5s-eca", "yolov5s-ca", "yolov5s-ema"],
    "x-p2": ["yolov5x-p2", "yolov5x-p2-cbam", "yolov5x-p2-ca", "yolov5x-p2-ema"],
}
GROUP_ALIASES = {"s": "s", "yolov5s-all": "s", "x-p2": "x-p2", "p2": "x-p2", "x": "x-p2", "yolov5x-p2-all": "x-p2"}
ATTENTION_SUFFIXES = ("-ema", "-ca", "-cbam", "-sa", "-eca", "-se")

# Where the attention modules sit, as (channels, stride) at width 0.5 (yolov5s) and 1.25 (yolov5x-p2); every module of
# models/attention at yolov5s's Table 2 sites.
MODULE_SITES: dict[str, tuple[tuple[str, ...], tuple[tuple[int, int], ...]]] = {
    "yolov5s": (tuple(catalogue_names()), ((256, 16), (512, 32))),
    "yolov5x-p2": (("EMA", "CA", "CBAM"), ((640, 16), (320, 8), (320, 4))),
}

MAX_MULTIPLICITY = 10  # a faster group runs at most this many times per round
MIN_ROUNDS, MAX_ROUNDS = 3, 200


class BenchmarkError(ValueError):
    """A benchmark that cannot run as asked (unknown model, missing export.py/val.py...): one clear message."""


def log(msg: str = "") -> None:
    print(msg, flush=True)


def configure_malloc(stock: bool) -> str:
    """Keep freed memory (``utils.allocator``) unless ``stock``; return how the allocator is set, for the header."""
    if not stock:
        allocator.keep_freed_memory()
    elif allocator.is_tuned():
        log("benchmarks: warning: malloc was already tuned in this process; --stock-malloc needs a fresh process")
    return allocator.describe()


# ----------------------------------------------------------------------------------------------------
# Which models: groups, names, YAMLs, weights
# ----------------------------------------------------------------------------------------------------


@dataclass
class Spec:
    """One row to benchmark: ``source`` is a YAML path or a ``.pt`` checkpoint."""

    name: str
    source: Path
    weights: bool = False


def baseline_name(name: str) -> str:
    """The model a row is compared with: its name without an attention suffix (``yolov5s-ema`` -> ``yolov5s``) or
    weights tag (``yolov5s-ema [best.pt]`` -> ``yolov5s``)."""
    name = name.split(" [")[0]
    for suffix in ATTENTION_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _weights_name(path: Path) -> str:
    """A checkpoint's row name: the stem of the YAML it was built from if the checkpoint says, else the file stem."""
    with contextlib.suppress(Exception):  # only a name: any unreadable checkpoint fails clearly when it is loaded
        from utils.checkpoint import load_checkpoint

        ckpt = load_checkpoint(path)
        model = ckpt.get("ema") or ckpt.get("model")
        yaml_file = (getattr(model, "yaml", None) or {}).get("yaml_file") or getattr(model, "yaml_file", "")
        if yaml_file:
            return Path(yaml_file).stem
    return path.stem


def resolve_models(items: Iterable[str], add_baselines: bool = True) -> list[Spec]:
    """Expand groups (``s``, ``x-p2``, ``all``), names (``yolov5s-ema``), YAML paths and ``.pt`` weights into rows."""
    specs: list[Spec] = []
    for item in items:
        for part in filter(None, (p.strip() for p in str(item).split(","))):
            key = part.lower()
            if key in ("all", "table2"):
                names = GROUPS["s"] + GROUPS["x-p2"]
            elif key in GROUP_ALIASES:
                names = GROUPS[GROUP_ALIASES[key]]
            else:
                names = [part]
            for n in names:
                specs.append(_spec(n))
    if add_baselines:
        specs = _with_baselines(specs)
    seen: set[str] = set()
    unique = []
    for s in specs:
        key = str(s.source.resolve())
        if key not in seen:
            seen.add(key)
            unique.append(s)
    counts = Counter(s.name for s in unique)
    for s in unique:  # weights named after the YAML that is also a row: tag them with the file
        if s.weights and counts[s.name] > 1:
            run_dir = f"{s.source.parent.parent.name}/" if s.source.parent.name == "weights" else ""
            s.name = f"{s.name} [{run_dir}{s.source.name}]"
    dup = sorted(n for n, k in Counter(s.name for s in unique).items() if k > 1)
    if dup:
        raise BenchmarkError(f"two rows named {', '.join(dup)}: give each weights file a different name")
    return unique


def _spec(item: str) -> Spec:
    p = Path(item)
    if p.suffix == ".pt":
        if not p.is_file():
            raise BenchmarkError(f"--models {item}: weights file not found")
        return Spec(_weights_name(p), p, weights=True)
    try:
        cfg = resolve_cfg(item)
    except FileNotFoundError as e:
        groups = ", ".join(sorted(GROUP_ALIASES))
        raise BenchmarkError(f"--models {item}: not a group ({groups}, all), a model in models/, a YAML path or a .pt "
                             "file") from e
    return Spec(cfg.stem, cfg)


def _with_baselines(specs: list[Spec]) -> list[Spec]:
    """Put each row's baseline right before the first row that needs it (building it from models/ if missing)."""
    names = {s.name for s in specs}
    out: list[Spec] = []
    for s in specs:
        base = baseline_name(s.name)
        if base != s.name and base not in names:
            with contextlib.suppress(FileNotFoundError):
                out.append(Spec(base, resolve_cfg(base)))
                names.add(base)
                log(f"benchmarks: adding {base}, the baseline of {s.name}")
        out.append(s)
    return out


# ----------------------------------------------------------------------------------------------------
# Timing: interleaved round-robin
# ----------------------------------------------------------------------------------------------------


def synchronizer(device: torch.device) -> Callable[[], None]:
    return torch.cuda.synchronize if device.type == "cuda" else (lambda: None)


CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.process_time}


def _timed(fn: Callable[[], Any], sync: Callable[[], None], clock: Callable[[], float] = time.perf_counter) -> float:
    sync()
    t = clock()
    fn()
    sync()
    return clock() - t


def multiplicities(estimates: dict[str, float], groups: dict[str, str]) -> dict[str, int]:
    """Runs per round for each function: groups faster than the slowest run proportionally more (capped)."""
    if not estimates or min(estimates.values()) <= 0:
        return {k: 1 for k in groups}
    group_cost: dict[str, list[float]] = {}
    for k, t in estimates.items():
        group_cost.setdefault(groups[k], []).append(t)
    mean = {g: statistics.fmean(v) for g, v in group_cost.items()}
    slowest = max(mean.values())
    per_group = {g: max(1, min(MAX_MULTIPLICITY, round(slowest / m))) for g, m in mean.items()}
    return {k: per_group[groups[k]] for k in groups}


def interleaved(fns: dict[str, Callable[[], Any]], groups: dict[str, str] | None = None, repeats: int | None = None,
                warmup: int = 2, budget_s: float = 120.0, sync: Callable[[], None] = lambda: None,
                label: str = "timing", clock: str = "wall") -> dict[str, list[float]]:
    """Time every function in round-robin rounds; returns each one's list of seconds.

    ``warmup`` untimed rounds come first (the last one estimates each function's cost). Functions of a faster group
    (``groups`` maps function -> group; rows compared with each other share one) run several times per round so all
    get similar time. ``repeats`` is the number of rounds; ``None`` fits them into about ``budget_s`` seconds.
    ``clock`` is ``wall`` (elapsed time) or ``cpu`` (this process's CPU time: with one thread, the work itself without
    the time other processes on a shared machine take from it).
    """
    groups = groups or {k: k for k in fns}
    tick = CLOCKS[clock]
    estimates: dict[str, float] = {}
    for _ in range(warmup if repeats is not None else max(warmup, 1)):
        estimates = {k: _timed(fn, sync, tick) for k, fn in fns.items()}
    mult = multiplicities(estimates, groups)
    if repeats is None:
        if sum(mult[k] * t for k, t in estimates.items()) * MIN_ROUNDS > budget_s:
            mult = {k: 1 for k in fns}  # the budget does not allow extra runs of the faster groups
        round_cost = sum(mult[k] * t for k, t in estimates.items())
        repeats = max(MIN_ROUNDS, min(MAX_ROUNDS, int(budget_s / max(round_cost, 1e-9))))
    log(f"benchmarks: {label}: {repeats} rounds of {sum(mult.values())} runs (up to {max(mult.values())} per function)")
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for j in range(max(mult.values())):
            for k, fn in fns.items():
                if j < mult[k]:
                    times[k].append(_timed(fn, sync, tick))
    return times


def median_ms(ts: list[float]) -> float:
    return statistics.median(ts) * 1e3


# ----------------------------------------------------------------------------------------------------
# Measurements of one model
# ----------------------------------------------------------------------------------------------------


def build_model(spec: Spec) -> nn.Module:
    """The unfused float32 model of a row (random weights for a YAML), on CPU."""
    if spec.weights:
        from utils.checkpoint import load_model

        return load_model(spec.source, device="cpu", fuse=False)
    torch.manual_seed(0)
    return Model(spec.source, verbose=False)


@contextlib.contextmanager
def quiet_stderr() -> Any:
    """Silence file descriptor 2 in the block: the profiler's C++ backend prints start/stop lines there."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def peak_memory_mb(fn: Callable[[], Any], device: torch.device) -> float:
    """Peak bytes of tensors alive during ``fn()`` beyond those alive before it, in MiB."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated(device) - before) / 2**20
    with quiet_stderr(), torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU],
                                                profile_memory=True) as prof:
        fn()
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    live = peak = 0
    for e in sorted(events, key=lambda e: e.start_ns()):
        live += e.nbytes()
        peak = max(peak, live)
    return peak / 2**20


def synthetic_targets(batch_size: int, nc: int, per_image: int = 4) -> torch.Tensor:
    """Fixed YOLOv5 targets ``(n, 6)`` = image, class, x, y, w, h (normalised) for a training-step benchmark."""
    g = torch.Generator().manual_seed(0)
    n = batch_size * per_image
    img = torch.arange(batch_size).repeat_interleave(per_image).float()
    cls = torch.randint(0, nc, (n,), generator=g).float()
    xy = torch.rand(n, 2, generator=g) * 0.6 + 0.2
    wh = torch.rand(n, 2, generator=g) * 0.3 + 0.05
    return torch.cat((img[:, None], cls[:, None], xy, wh), 1)


def train_step(model: nn.Module, batch_size: int, imgsz: int, device: torch.device,
               amp: bool = False) -> Callable[[], None]:
    """One training step without the optimizer: forward in train mode (autocast fp16 with ``amp``), loss, backward."""
    model = model.to(device).train()
    criterion = model.init_criterion()
    im = torch.rand(batch_size, 3, imgsz, imgsz, device=device)
    targets = synthetic_targets(batch_size, model.nc).to(device)

    def step() -> None:
        with torch.autocast(device.type, torch.float16, enabled=amp):
            loss, _ = criterion(model(im), targets)
        loss.sum().backward()
        model.zero_grad(set_to_none=True)

    return step


def inference_call(model: nn.Module, im: torch.Tensor) -> Callable[[], Any]:
    def call() -> Any:
        with torch.inference_mode():
            return model(im)

    return call


# ----------------------------------------------------------------------------------------------------
# Exported formats (export.py) and mAP (val.py)
# ----------------------------------------------------------------------------------------------------

def parse_formats(formats: str | Iterable[str] | None) -> list[str]:
    """The deployment variants (``utils/deploy.py``) behind ``--formats``: a runtime (``onnx``, ``openvino``: its fp32,
    bf16 where the CPU has it, and INT8 variants) or variant names such as ``openvino-int8``."""
    if not formats:
        return []
    items = formats.split(",") if isinstance(formats, str) else [f for x in formats for f in str(x).split(",")]
    variants: list[str] = []
    for f in (x.strip().lower() for x in items if x.strip()):
        if f in deploy.RUNTIMES:
            variants += deploy.variants_for_formats([f])
        elif f in deploy.VARIANTS and f != "pytorch":
            variants.append(f)
        else:
            choices = [*deploy.RUNTIMES, *(v for v in deploy.VARIANTS if v != "pytorch")]
            raise BenchmarkError(f"--formats {f}: unknown; choose from {', '.join(choices)}")
    try:
        return deploy.check_variants(variants)
    except ValueError as e:
        raise BenchmarkError(f"--formats: {e}") from e


def export_calls(model: nn.Module, name: str, variants: list[str], im: torch.Tensor, save_dir: Path, data: str,
                 calib_images: int) -> tuple[dict[str, Callable[[], Any]], dict[str, Any]]:
    """Export ``model`` for each variant (INT8 calibrated on ``data``); return per variant a call running it on ``im``
    and the exported files (for mAP)."""
    stem = re.sub(r"[^\w-]+", "_", name).strip("_")  # "yolov5s-ema [exp/best.pt]" -> "yolov5s-ema_exp_best_pt"
    targets = deploy.export_variants(model, stem, variants, list(im.shape[2:]), save_dir / "export", data=data,
                                     calib_images=calib_images, batch_size=im.shape[0])
    return deploy.variant_calls(targets, im.cpu().float().numpy(), torch.get_num_threads()), targets


def measure_map(weights: Path, data: str, imgsz: int, device: str, save_dir: Path) -> tuple[float, float]:
    """(mAP@.5, mAP@.5:.95) in % of ``weights`` on ``data`` with val.py's defaults."""
    import val

    stats = val.run(data=data, weights=[str(weights)], imgsz=imgsz, device=device, plots=False,
                    project=save_dir / "val", name=weights.stem, exist_ok=True)[0]
    return 100 * float(stats["metrics/mAP50(B)"]), 100 * float(stats["metrics/mAP50-95(B)"])


# ----------------------------------------------------------------------------------------------------
# The table
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    key: str
    header: str
    fmt: str = "{}"


def columns_for(rows: list[dict]) -> list[Column]:
    """The table's columns: always size, GFLOPs and latency; the others when some row has them."""
    cols = [
        Column("model", "model"), Column("params_m", "params (M)", "{:.2f}"),
        Column("paper_params_m", "paper", "{:.2f}"), Column("d_params_m", "Δ (M)", "{:+.3f}"),
        Column("gflops", "GFLOPs", "{:.2f}"), Column("paper_gflops", "paper", "{:.2f}"),
        Column("d_gflops_pct", "Δ %", "{:+.1f}"),
        Column("latency_ms", "latency (ms)", "{:.1f}"), Column("rel_latency", "× base", "{:.3f}"),
        Column("peak_mem_mb", "peak mem (MB)", "{:.1f}"),
        Column("train_step_ms", "train step (ms)", "{:.0f}"), Column("train_img_s", "train img/s", "{:.1f}"),
        Column("rel_train", "× base", "{:.3f}"),
        Column("map50", "mAP50", "{:.1f}"), Column("paper_map50", "paper", "{:.1f}"),
        Column("map50_95", "mAP50-95", "{:.1f}"), Column("paper_map50_95", "paper", "{:.1f}"),
    ]
    optional = {"paper_params_m", "d_params_m", "paper_gflops", "d_gflops_pct", "rel_latency", "peak_mem_mb",
                "train_step_ms", "train_img_s", "rel_train", "map50", "map50_95"}
    present = {k for r in rows for k, v in r.items() if v is not None}
    keep = []
    for c in cols:
        if c.key in optional and c.key not in present:
            continue
        if c.key.startswith("paper_map") and c.key.removeprefix("paper_") not in present:
            continue  # paper mAP only next to a measured one
        keep.append(c)
    return keep


def cell(value: Any, fmt: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return value if isinstance(value, str) else fmt.format(value)


def markdown_table(rows: list[dict], columns: list[Column]) -> str:
    lines = ["| " + " | ".join(c.header for c in columns) + " |", "|" + "|".join(" --- " for _ in columns) + "|"]
    lines += ["| " + " | ".join(cell(r.get(c.key), c.fmt) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def write_csv(rows: list[dict], path: Path) -> Path:
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows({k: ("" if r.get(k) is None else r.get(k)) for k in keys} for r in rows)
    return path


def add_relative(rows: list[dict], key: str, out: str) -> None:
    """``out`` = row[key] / baseline row[key], the baseline being the row named ``baseline_name(row)``."""
    by_name = {r["model"]: r for r in rows}
    for r in rows:
        base = by_name.get(r["baseline"])
        ok = base is not None and r.get(key) is not None and base.get(key)
        r[out] = r[key] / base[key] if ok else None


def add_paper(row: dict, imgsz: int = 640) -> dict:
    """Join the paper's Table 2 numbers on the model name, with our differences to them.

    The paper's GFLOPs are at 640x640, so they are joined only when ``row["gflops"]`` was counted at that size.
    """
    p = PAPER.get(row["model"])
    pg = p if p and imgsz == 640 else None
    row["paper_params_m"] = p.params_m if p else None
    row["d_params_m"] = row["params_m"] - p.params_m if p else None
    row["paper_gflops"] = pg.gflops if pg else None
    row["d_gflops_pct"] = 100 * (row["gflops"] / pg.gflops - 1) if pg and row["gflops"] else None
    row["paper_map50"] = p.map50 if p else None
    row["paper_map50_95"] = p.map50_95 if p else None
    return row


def machine() -> str:
    """The CPU's model name, as lscpu shows it."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def describe(device: torch.device, malloc: str = "stock malloc") -> str:
    hw = torch.cuda.get_device_name(device) if device.type == "cuda" else machine()
    threads = torch.get_num_threads()
    return f"{date.today().isoformat()} · {hw} · torch {torch.__version__} · {threads} CPU threads · {malloc}"


def plot(rows: list[dict], path: Path) -> Path:
    """Latency against GFLOPs (and against mAP when measured), one colour per group."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = [("gflops", "GFLOPs")] + ([("map50_95", "mAP@.5:.95 (%)")] if any(r.get("map50_95") for r in rows) else [])
    fig, axes = plt.subplots(1, len(xs), figsize=(6 * len(xs), 4.5), squeeze=False)
    groups = list(dict.fromkeys(r["baseline"] for r in rows))
    for ax, (key, label) in zip(axes[0], xs):
        for i, g in enumerate(groups):
            pts = [r for r in rows if r["baseline"] == g and r.get(key) is not None]
            ax.scatter([r[key] for r in pts], [r["latency_ms"] for r in pts], color=f"C{i}", label=g)
            for r in pts:
                ax.annotate(r["model"], (r[key], r["latency_ms"]), fontsize=7, xytext=(3, 3),
                            textcoords="offset points")
        ax.set_xlabel(label)
        ax.set_ylabel("latency (ms)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------------------------------
# The model benchmark
# ----------------------------------------------------------------------------------------------------


def select_device(device: str) -> torch.device:
    d = str(device).strip().lower()
    if d in ("", "cpu"):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise BenchmarkError(f"--device {device}: no CUDA device is available; use --device cpu")
    return torch.device(f"cuda:{d.split(',')[0]}" if d.split(",")[0].isdigit() else d)


def save_dir_for(project: str | Path, name: str, exist_ok: bool = False) -> Path:
    from ultralytics.utils.files import increment_path

    return increment_path(Path(project) / name, exist_ok=exist_ok, sep="", mkdir=True)  # exp, exp2, ... as YOLOv5


def measure_rows(specs: list[Spec], imgsz: int, device: torch.device,
                 half: bool) -> tuple[list[dict], dict[str, nn.Module]]:
    """Build every model, count parameters and GFLOPs (unfused, as built), fuse it for inference."""
    rows, fused = [], {}
    for s in specs:
        t = time.perf_counter()
        model = build_model(s)
        params = sum(p.numel() for p in model.parameters())
        gflops = count_flops(model, imgsz)
        m = model.fuse(verbose=False).to(device).eval()
        fused[s.name] = m.half() if half else m
        rows.append(add_paper({"model": s.name, "baseline": baseline_name(s.name), "source": str(s.source),
                               "params": params, "params_m": params / 1e6, "gflops": gflops}, imgsz))
        log(f"benchmarks: built {s.name}: {params:,} parameters, {gflops:.2f} GFLOPs ({time.perf_counter() - t:.1f}s)")
    return rows, fused


@dataclass(frozen=True)
class Timing:
    """How to time: ``repeats`` rounds (``None``: as many as fit in ``budget`` seconds) after ``warmup`` rounds."""

    repeats: int | None = None
    warmup: int = 2
    budget: float = 150.0
    clock: str = "wall"
    sync: Callable[[], None] = lambda: None

    def __call__(self, fns: dict[str, Callable[[], Any]], groups: dict[str, str], label: str,
                 min_warmup: int = 0) -> dict[str, list[float]]:
        return interleaved(fns, groups, self.repeats, max(self.warmup, min_warmup), self.budget, self.sync, label,
                           self.clock)


def check_options(device: torch.device, half: bool, clock: str, sizes: dict[str, int], formats: list[str],
                  map_weights: list[str]) -> None:
    """Fail early, with the flag to change, on combinations that cannot run."""
    if half and device.type != "cuda":
        raise BenchmarkError("--half needs a CUDA device (--device 0); CPU latency is measured in fp32")
    if clock not in CLOCKS:
        raise BenchmarkError(f"--clock {clock}: choose from {', '.join(CLOCKS)}")
    if clock == "cpu" and (device.type != "cpu" or torch.get_num_threads() != 1):
        raise BenchmarkError("--clock cpu measures this process's CPU time, which is a latency only on CPU with "
                             "--threads 1")
    for flag, size in sizes.items():
        if size % 32:
            raise BenchmarkError(f"{flag} {size}: must be a multiple of 32 (the models' largest stride)")
    if formats and device.type != "cpu":
        raise BenchmarkError("--formats times ONNX Runtime and OpenVINO on CPU; use --device cpu")


def run(models: Iterable[str] = ("all",), imgsz: int = 640, batch_size: int = 1, device: str = "cpu",
        half: bool = False, threads: int | None = None, repeats: int | None = None, warmup: int = 2,
        budget: float = 150.0, clock: str = "wall", formats: str | Iterable[str] | None = None, train: bool = False,
        train_batch_size: int = 8, train_imgsz: int = 320, map_weights: Iterable[str] | None = None,
        data: str = "data/shapes.yaml", calib_images: int = 100, plots: bool = False,
        project: str | Path = ROOT / "runs" / "benchmarks", name: str = "exp", exist_ok: bool = False,
        memory: bool = True, stock_malloc: bool = False) -> list[dict]:
    """Benchmark ``models``: print the Markdown table, write CSV/Markdown (and PNG) to ``project/name``, return rows."""
    if threads:
        torch.set_num_threads(threads)
    malloc = configure_malloc(stock_malloc)
    dev = select_device(device)
    fmts = parse_formats(formats)
    map_weights = [str(w) for w in (map_weights or [])]
    check_options(dev, half, clock, {"--imgsz": imgsz, "--train-imgsz": train_imgsz}, fmts, map_weights)
    specs = resolve_models([*models, *map_weights])
    if not specs:
        raise BenchmarkError("no models to benchmark: give --models and/or --map WEIGHTS")
    save_dir = save_dir_for(project, name, exist_ok)
    timing = Timing(repeats, warmup, budget, clock, synchronizer(dev))
    log(f"benchmarks: {len(specs)} models, {imgsz}x{imgsz} batch {batch_size}, {dev} {'fp16' if half else 'fp32'}, "
        f"{torch.get_num_threads()} threads, {clock} clock -> {save_dir}")

    setup = f"{describe(dev, malloc)} · {imgsz}x{imgsz} batch {batch_size}"  # before val.py resets the threads
    rows, fused = measure_rows(specs, imgsz, dev, half)
    im = torch.rand(batch_size, 3, imgsz, imgsz, device=dev, dtype=torch.float16 if half else torch.float32)
    deploy_rows, targets = measure_latency(rows, fused, im, fmts, timing, save_dir, memory, data, calib_images)
    del fused
    if train:
        measure_training(rows, specs, train_batch_size, train_imgsz, dev, half, timing)
    for r, s in zip(rows, specs):
        if s.weights and map_weights:
            r["map50"], r["map50_95"] = measure_map(s.source, data, imgsz, device, save_dir)
            if fmts:
                scored = deploy.map_rows(s.source, data, imgsz, save_dir / "val" / s.source.stem, ["pytorch", *fmts],
                                         targets=targets[s.name], device=device)
                maps = {m["variant"]: m for m in scored}
                for d in deploy_rows:
                    if d["model"] == s.name:
                        d.update({k: maps[d["variant"]][k] for k in ("map50", "map50_95", "delta_map50_95",
                                                                      "delta_vs_fp32_export")})
    return report(rows, save_dir, setup, clock, plots, deploy_rows)


def measure_latency(rows: list[dict], fused: dict[str, nn.Module], im: torch.Tensor, variants: list[str],
                    timing: Timing, save_dir: Path, memory: bool = True, data: str = "data/shapes.yaml",
                    calib_images: int = 100) -> tuple[list[dict], dict[str, dict[str, Any]]]:
    """Latency of every row in PyTorch and in each exported variant, all interleaved; then peak memory of one forward.

    Returns the deployment rows (one per model and runtime variant, PyTorch first) and the exported files per model."""
    calls = {f"{n}|pytorch": inference_call(m, im) for n, m in fused.items()}
    targets: dict[str, dict[str, Any]] = {}
    for n, m in fused.items():
        if variants:
            exported, targets[n] = export_calls(m, n, variants, im, save_dir, data, calib_images)
            calls |= {f"{n}|{v}": call for v, call in exported.items()}
    times = timing(calls, {k: baseline_name(k.split("|")[0]) for k in calls}, "latency")
    deploy_rows = []
    for r in rows:
        ts = times[f"{r['model']}|pytorch"]
        r.update(latency_ms=median_ms(ts), latency_min_ms=min(ts) * 1e3, runs=len(ts))
        for v in ["pytorch", *variants] if variants else []:
            ms = median_ms(times[f"{r['model']}|{v}"])
            deploy_rows.append({"model": r["model"], "variant": v, "latency_ms": ms, "speedup": r["latency_ms"] / ms})
        if memory:
            r["peak_mem_mb"] = peak_memory_mb(calls[f"{r['model']}|pytorch"], im.device)
    add_relative(rows, "latency_ms", "rel_latency")
    return deploy_rows, targets


def measure_training(rows: list[dict], specs: list[Spec], batch_size: int, imgsz: int, device: torch.device,
                     amp: bool, timing: Timing) -> None:
    """Training-step time (forward + loss + backward, no optimizer step) of every row, interleaved."""
    steps = {s.name: train_step(build_model(s), batch_size, imgsz, device, amp) for s in specs}
    times = timing(steps, {k: baseline_name(k) for k in steps}, "training step", min_warmup=1)
    for r in rows:
        ms = median_ms(times[r["model"]])
        r.update(train_step_ms=ms, train_img_s=batch_size / ms * 1e3)
    add_relative(rows, "train_step_ms", "rel_train")


DEPLOY_COLUMNS = [
    Column("model", "model"), Column("variant", "runtime"), Column("latency_ms", "latency (ms)", "{:.1f}"),
    Column("speedup", "× PyTorch", "{:.2f}"), Column("map50", "mAP50", "{:.1f}"),
    Column("map50_95", "mAP50-95", "{:.1f}"), Column("delta_map50_95", "Δ mAP50-95 vs PyTorch", "{:+.2f}"),
    Column("delta_vs_fp32_export", "Δ vs fp32 export", "{:+.2f}"),
]


def report(rows: list[dict], save_dir: Path, setup: str, clock: str = "wall", plots: bool = False,
           deploy_rows: list[dict] | None = None) -> list[dict]:
    """Print and save the table (and, with ``--formats``, the deployment table: every runtime variant of each model)."""
    what = "CPU time" if clock == "cpu" else "latency"
    header = (f"Benchmarks {setup} · {what} = median of interleaved runs of the fused model; × base = ratio to the "
              "group's baseline")
    text = f"{header}\n\n{markdown_table(rows, columns_for(rows))}\n"
    if deploy_rows:
        columns = [c for c in DEPLOY_COLUMNS if any(r.get(c.key) is not None for r in deploy_rows)]
        scored = ("; mAP from val.py on the same exported files, PyTorch scored like them (batch 1, square images)"
                  if any("map50" in r for r in deploy_rows) else "")
        text += (f"\nDeployment · {what} of each runtime, timed in the same interleaved rounds{scored}\n\n"
                 f"{markdown_table(deploy_rows, columns)}\n")
        log(f"benchmarks: saved {write_csv(deploy_rows, save_dir / 'deploy.csv')}")
    log(f"\n{text}")
    (save_dir / "benchmarks.md").write_text(text, encoding="utf-8")
    log(f"benchmarks: saved {write_csv(rows, save_dir / 'benchmarks.csv')}")
    if plots:
        log(f"benchmarks: saved {plot(rows, save_dir / 'benchmarks.png')}")
    return rows


# ----------------------------------------------------------------------------------------------------
# Attention modules alone
# ----------------------------------------------------------------------------------------------------


def module_sites(imgsz: int, families: Iterable[str] = tuple(MODULE_SITES)) -> list[tuple[str, str, int, int]]:
    """(module, family, channels, size) for every attention module at every place it sits in a Table 2 model."""
    sites = []
    for fam in families:
        names, places = MODULE_SITES[fam]
        for c, stride in dict.fromkeys(places):
            sites += [(n, fam, c, max(imgsz // stride, 1)) for n in names]
    return sites


def module_calls(module: nn.Module, x: torch.Tensor) -> dict[str, Callable[[], Any]]:
    """Forward (eval, inference mode) and forward+backward (train mode, or eval mode where the batch is too small
    to train the module: ``utils.module_cost.trains_at``) of ``module``."""
    xg = x.detach().clone().requires_grad_(True)
    train = trains_at(module, x)

    def fwd() -> Any:
        module.eval()
        with torch.inference_mode():
            return module(x)

    def fwd_bwd() -> None:
        module.train(train)
        module(xg).square().mean().backward()
        module.zero_grad(set_to_none=True)
        xg.grad = None

    return {"fwd": fwd, "fwd_bwd": fwd_bwd}


MODULE_COLUMNS = [
    Column("module", "module"), Column("models", "in"), Column("shape", "shape (BCHW)"), Column("params", "params"),
    Column("gflops", "GFLOPs", "{:.4f}"), Column("fwd_ms", "fwd (ms)", "{:.3f}"),
    Column("fwd_bwd_ms", "fwd+bwd (ms)", "{:.3f}"), Column("note", "note"),
]


def time_modules_at(names: list[str], shape: tuple[int, int, int, int], device: torch.device,
                    timing: Timing) -> dict[str, dict[str, float]]:
    """Median ms of every call of ``module_calls`` for each named module at ``shape`` (all interleaved)."""
    x = torch.randn(*shape, device=device)
    calls = {f"{n}|{k}": f for n in names for k, f in module_calls(build_attention(n, shape[1]).to(device), x).items()}
    times = timing(calls, {k: "all" for k in calls}, f"modules at {'x'.join(map(str, shape))}")
    out: dict[str, dict[str, float]] = {n: {} for n in names}
    for key, ts in times.items():
        n, what = key.split("|")
        out[n][f"{what}_ms"] = median_ms(ts)
    return out


def run_modules(imgsz: int = 640, batch_size: int = 1, device: str = "cpu", threads: int | None = None,
                repeats: int | None = None, warmup: int = 2, budget: float = 60.0, clock: str = "wall",
                project: str | Path = ROOT / "runs" / "benchmarks", name: str = "modules",
                exist_ok: bool = False, families: Iterable[str] = tuple(MODULE_SITES),
                stock_malloc: bool = False) -> list[dict]:
    """Time each attention module alone at its Table 2 shapes, all modules of a shape interleaved."""
    if threads:
        torch.set_num_threads(threads)
    malloc = configure_malloc(stock_malloc)
    dev = select_device(device)
    check_options(dev, False, clock, {}, [], [])
    save_dir = save_dir_for(project, name, exist_ok)
    sites = module_sites(imgsz, families)
    places = list(dict.fromkeys((c, size) for _, _, c, size in sites))
    timing = Timing(repeats, warmup, budget / max(len(places), 1), clock, synchronizer(dev))
    rows = []
    for c, size in places:
        here = [(n, fam) for n, fam, c2, s2 in sites if (c2, s2) == (c, size)]
        names = list(dict.fromkeys(n for n, _ in here))
        medians = time_modules_at(names, (batch_size, c, size, size), dev, timing)
        for n in names:
            cost = module_cost(n, c, size, batch_size)
            row = {"module": n, "models": ", ".join(sorted({f for m, f in here if m == n})),
                   "shape": f"{batch_size}x{c}x{size}x{size}", "params": cost["params"], "gflops": cost["gflops"],
                   **medians[n], "note": "" if cost["trains"] else "fwd+bwd with BatchNorm in eval mode"}
            rows.append(row)
    what = "CPU time" if clock == "cpu" else "latency"
    header = (f"Attention modules {describe(dev, malloc)} · shapes at {imgsz}x{imgsz} · {what}: medians of "
              "interleaved runs")
    table = markdown_table(rows, MODULE_COLUMNS)
    log(f"\n{header}\n\n{table}\n")
    (save_dir / "modules.md").write_text(f"{header}\n\n{table}\n", encoding="utf-8")
    log(f"benchmarks: saved {write_csv(rows, save_dir / 'modules.csv')}")
    return rows


# ----------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------


def parse_opt(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=None,
                   help="groups (s, x-p2, all), model names, YAML paths or .pt weights; default: all Table 2 models")
    p.add_argument("--imgsz", "--img", "--img-size", type=int, default=640, help="inference size (pixels)")
    p.add_argument("--batch-size", type=int, default=1, help="inference batch size")
    p.add_argument("--device", default="cpu", help="cpu, or a CUDA device such as 0")
    p.add_argument("--half", action="store_true", help="CUDA: fp16 inference and AMP training steps")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's, one per core)")
    p.add_argument("--repeats", type=int, default=None,
                   help="timed rounds (default: as many as fit in --budget seconds, at least 3)")
    p.add_argument("--warmup", type=int, default=2, help="untimed warm-up rounds")
    p.add_argument("--budget", type=float, default=None,
                   help="seconds of timed runs per table when --repeats is not given (default 150; 60 with --modules)")
    p.add_argument("--clock", choices=tuple(CLOCKS), default="wall",
                   help="wall: elapsed time; cpu: process CPU time, with --threads 1 the latency without the time "
                        "other processes on a shared machine take")
    p.add_argument("--stock-malloc", action="store_true",
                   help="keep glibc's default allocator settings (default: keep freed memory, see above)")
    p.add_argument("--formats", default=None,
                   help="also time exports: onnx, openvino (each runtime's fp32, bf16 where the CPU has it and INT8 "
                        "variants) or variant names from utils/deploy.py, e.g. openvino-int8")
    p.add_argument("--calib-images", type=int, default=100, help="INT8 calibration images from --data's train split")
    p.add_argument("--train", action="store_true", help="also time a training step (forward + loss + backward)")
    p.add_argument("--train-batch-size", type=int, default=8, help="batch size of the --train step")
    p.add_argument("--train-imgsz", type=int, default=320, help="image size of the --train step")
    p.add_argument("--map", nargs="+", default=None, metavar="WEIGHTS", help="validate these .pt weights (val.py) "
                   "and show their mAP next to the paper's; they become rows of the table")
    p.add_argument("--data", default="data/shapes.yaml", help="dataset.yaml for --map and INT8 calibration")
    p.add_argument("--plot", action="store_true", help="save latency vs GFLOPs (and vs mAP) as benchmarks.png")
    p.add_argument("--modules", action="store_true", help="time the attention modules alone instead of the models")
    p.add_argument("--project", default=str(ROOT / "runs" / "benchmarks"), help="save to project/name")
    p.add_argument("--name", default=None, help="save to project/name (default: exp, or modules with --modules)")
    p.add_argument("--exist-ok", action="store_true", help="existing project/name ok, do not increment")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    opt = parse_opt(sys.argv[1:] if argv is None else argv)
    common = dict(imgsz=opt.imgsz, batch_size=opt.batch_size, device=opt.device, threads=opt.threads,
                  repeats=opt.repeats, warmup=opt.warmup, clock=opt.clock, project=opt.project, exist_ok=opt.exist_ok,
                  stock_malloc=opt.stock_malloc)
    try:
        if opt.modules:
            run_modules(budget=opt.budget or 60.0, name=opt.name or "modules", **common)
        else:
            models = opt.models if opt.models is not None else ([] if opt.map else ["all"])
            run(models, half=opt.half, budget=opt.budget or 150.0, formats=opt.formats, train=opt.train,
                train_batch_size=opt.train_batch_size, train_imgsz=opt.train_imgsz, map_weights=opt.map,
                data=opt.data, calib_images=opt.calib_images, plots=opt.plot, name=opt.name or "exp", **common)
    except BenchmarkError as e:
        print(f"benchmarks.py: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
