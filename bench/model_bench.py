"""The model benchmark (``python benchmarks.py``): size, GFLOPs, latency, peak memory, training step and mAP of each
model, next to the paper's Table 2 and to the baseline of the model's group."""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
import torch.nn as nn

from bench import BenchmarkError, deploy, log
from bench.common import PROJECT, check_options, configure_malloc, environment, save_dir_for, select_device
from bench.paper import GROUP_ALIASES, GROUPS, add_paper, baseline_name
from bench.report import add_relative, report
from bench.timing import Timing, median_ms, peak_memory_mb, synchronizer
from models.yolo import Model, count_flops, resolve_cfg

# ----------------------------------------------------------------------------------------------------
# Which models: groups, names, YAMLs, weights
# ----------------------------------------------------------------------------------------------------


@dataclass
class Spec:
    """One row to benchmark: ``source`` is a YAML path or a ``.pt`` checkpoint."""

    name: str
    source: Path
    weights: bool = False

    def build(self) -> nn.Module:
        """The unfused float32 model of the row (random weights for a YAML), on CPU."""
        if self.weights:
            from utils.checkpoint import load_model

            return load_model(self.source, device="cpu", fuse=False)
        torch.manual_seed(0)
        return Model(self.source, verbose=False)


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
# Measurements of one model
# ----------------------------------------------------------------------------------------------------


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


def measure_rows(specs: list[Spec], imgsz: int, device: torch.device,
                 half: bool) -> tuple[list[dict], dict[str, nn.Module]]:
    """Build every model, count parameters and GFLOPs (unfused, as built), fuse it for inference."""
    rows, fused = [], {}
    for s in specs:
        t = time.perf_counter()
        model = s.build()
        params = sum(p.numel() for p in model.parameters())
        gflops = count_flops(model, imgsz)
        m = model.fuse(verbose=False).to(device).eval()
        fused[s.name] = m.half() if half else m
        rows.append(add_paper({"model": s.name, "baseline": baseline_name(s.name), "source": str(s.source),
                               "params": params, "params_m": params / 1e6, "gflops": gflops}, imgsz))
        log(f"benchmarks: built {s.name}: {params:,} parameters, {gflops:.2f} GFLOPs ({time.perf_counter() - t:.1f}s)")
    return rows, fused


def measure_latency(rows: list[dict], fused: dict[str, nn.Module], im: torch.Tensor, variants: list[str],
                    timing: Timing, save_dir: Path, memory: bool = True, data: str = "data/shapes.yaml",
                    calib_images: int = 100) -> tuple[list[dict], dict[str, dict[str, Any]]]:
    """Latency of every row in PyTorch and in each exported variant, all interleaved; then peak memory of one forward.

    Returns the deployment rows (one per model and runtime variant, PyTorch first) and the exported files per model."""
    calls = {f"{n}|pytorch": inference_call(m, im) for n, m in fused.items()}
    targets: dict[str, dict[str, Any]] = {}
    for n, m in fused.items():
        if variants:
            exported, targets[n] = deploy.export_calls(m, n, variants, im, save_dir, data, calib_images)
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
    steps = {s.name: train_step(s.build(), batch_size, imgsz, device, amp) for s in specs}
    times = timing(steps, {k: baseline_name(k) for k in steps}, "training step", min_warmup=1)
    for r in rows:
        ms = median_ms(times[r["model"]])
        r.update(train_step_ms=ms, train_img_s=batch_size / ms * 1e3)
    add_relative(rows, "train_step_ms", "rel_train")


# ----------------------------------------------------------------------------------------------------
# The run
# ----------------------------------------------------------------------------------------------------


def run(models: Iterable[str] = ("all",), imgsz: int = 640, batch_size: int = 1, device: str = "cpu",
        half: bool = False, threads: int | None = None, repeats: int | None = None, warmup: int = 2,
        budget: float = 150.0, clock: str = "wall", formats: str | Iterable[str] | None = None, train: bool = False,
        train_batch_size: int = 8, train_imgsz: int = 320, map_weights: Iterable[str] | None = None,
        data: str = "data/shapes.yaml", calib_images: int = 100, plots: bool = False,
        project: str | Path = PROJECT, name: str = "exp", exist_ok: bool = False,
        memory: bool = True, stock_malloc: bool = False) -> list[dict]:
    """Benchmark ``models``: print the Markdown table, write CSV/Markdown (and PNG) to ``project/name``, return rows."""
    if threads:
        torch.set_num_threads(threads)
    malloc = configure_malloc(stock_malloc)
    dev = select_device(device)
    fmts = deploy.parse_formats(formats)
    map_weights = [str(w) for w in (map_weights or [])]
    check_options(dev, half, clock, {"--imgsz": imgsz, "--train-imgsz": train_imgsz}, fmts, map_weights)
    specs = resolve_models([*models, *map_weights])
    if not specs:
        raise BenchmarkError("no models to benchmark: give --models and/or --map WEIGHTS")
    save_dir = save_dir_for(project, name, exist_ok)
    timing = Timing(repeats, warmup, budget, clock, synchronizer(dev))
    log(f"benchmarks: {len(specs)} models, {imgsz}x{imgsz} batch {batch_size}, {dev} {'fp16' if half else 'fp32'}, "
        f"{torch.get_num_threads()} threads, {clock} clock -> {save_dir}")

    setup = f"{environment(dev, malloc)} · {imgsz}x{imgsz} batch {batch_size}"  # before val.py resets the threads
    rows, fused = measure_rows(specs, imgsz, dev, half)
    im = torch.rand(batch_size, 3, imgsz, imgsz, device=dev, dtype=torch.float16 if half else torch.float32)
    deploy_rows, targets = measure_latency(rows, fused, im, fmts, timing, save_dir, memory, data, calib_images)
    del fused
    if train:
        measure_training(rows, specs, train_batch_size, train_imgsz, dev, half, timing)
    for r, s in zip(rows, specs):
        if s.weights and map_weights:
            r["map50"], r["map50_95"] = deploy.measure_map(s.source, data, imgsz, device, save_dir)
            if fmts:
                scored = deploy.map_rows(s.source, data, imgsz, save_dir / "val" / s.source.stem, ["pytorch", *fmts],
                                         targets=targets[s.name], device=device)
                maps = {m["variant"]: m for m in scored}
                for d in deploy_rows:
                    if d["model"] == s.name:
                        d.update({k: maps[d["variant"]][k] for k in ("map50", "map50_95", "delta_map50_95",
                                                                      "delta_vs_fp32_export")})
    return report(rows, save_dir, setup, clock, plots, deploy_rows)
