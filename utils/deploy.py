"""Deployment speed and accuracy: one model in each CPU runtime and precision, side by side.

Variants (``VARIANTS``; the file each needs comes from ``export.py``):

=====================  ===================================================================================
``pytorch``            PyTorch fp32, Conv+BN fused (the baseline)
``onnxruntime``        ONNX Runtime fp32 (CPUExecutionProvider) on ``<name>.onnx``
``onnxruntime-int8``   ONNX Runtime on ``<name>_int8.onnx`` (static INT8, QDQ; ``export.py --int8``)
``openvino-f32``       OpenVINO on ``<name>_openvino_model/`` with ``INFERENCE_PRECISION_HINT`` f32
``openvino-bf16``      the same IR at bf16 inference precision (CPUs whose OpenVINO capabilities list BF16)
``openvino-fp16``      an fp16-compressed IR (``export.py --half``) run at f32: smaller file, same CPU compute
``openvino-int8``      OpenVINO on ``<name>_int8_openvino_model/`` (NNCF INT8; float ops left in f32)
``openvino-int8-bf16`` the INT8 IR with its remaining float ops in bf16 (BF16 CPUs)
=====================  ===================================================================================

Typical use (``benchmarks.py --formats`` does this for each model row)::

    files = export_variants(model, "yolov5s-ema", variants, imgsz=640, save_dir=d, data="data/shapes.yaml")
    calls = variant_calls(model, files, np.random.rand(1, 3, 640, 640).astype(np.float32), threads=2)
    rows = latency_rows(time_interleaved(calls))                   # median ms and speed-up vs pytorch
    rows = map_rows(weights_pt, "data/shapes.yaml", imgsz=256, save_dir=d)   # mAP of each variant (val.py)
"""

from __future__ import annotations

import contextlib
import platform
import statistics
import subprocess
import time
from copy import deepcopy
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
import torch.nn as nn

# variant -> (file kind made by export.py, OpenVINO inference precision hint or None)
VARIANTS: dict[str, tuple[str, str | None]] = {
    "pytorch": ("pt", None),
    "onnxruntime": ("onnx", None),
    "onnxruntime-int8": ("onnx-int8", None),
    "openvino-f32": ("openvino", "f32"),
    "openvino-bf16": ("openvino", "bf16"),
    "openvino-fp16": ("openvino-fp16", "f32"),
    "openvino-int8": ("openvino-int8", "f32"),
    "openvino-int8-bf16": ("openvino-int8", "bf16"),
}
BF16_VARIANTS = tuple(k for k, (_, hint) in VARIANTS.items() if hint == "bf16")


def openvino_capabilities() -> list[str]:
    """The CPU plugin's ``OPTIMIZATION_CAPABILITIES`` (e.g. FP32, BF16, INT8); empty without OpenVINO."""
    try:
        import openvino as ov

        return list(ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
    except Exception:  # openvino missing or no CPU plugin
        return []


def bf16_supported() -> bool:
    return "BF16" in openvino_capabilities()


def default_variants() -> list[str]:
    """Every variant this machine can run (bf16 ones only where OpenVINO reports BF16), without ``openvino-fp16``."""
    bf16 = bf16_supported()
    return [v for v in VARIANTS if v != "openvino-fp16" and (bf16 or v not in BF16_VARIANTS)]


def variants_for_formats(formats: Iterable[str], int8: bool = True) -> list[str]:
    """The variants behind ``benchmarks.py --formats onnx,openvino``: fp32, bf16 (where the CPU has it) and INT8 of
    each runtime (INT8 left out with ``int8=False``)."""
    formats = {f.strip().lower() for f in formats}
    bad = formats - {"onnx", "openvino"}
    if bad:
        raise ValueError(f"--formats {', '.join(sorted(bad))}: unknown; choose from onnx, openvino")
    return [v for v in default_variants() if v != "pytorch" and VARIANTS[v][0].split("-")[0] in formats
            and (int8 or "int8" not in v)]


def check_variants(variants: Iterable[str]) -> list[str]:
    out = list(dict.fromkeys(variants))
    bad = [v for v in out if v not in VARIANTS]
    if bad:
        raise ValueError(f"unknown deployment variant {', '.join(bad)}; choose from {', '.join(VARIANTS)}")
    if not bf16_supported() and any(v in BF16_VARIANTS for v in out):
        raise ValueError(f"{', '.join(v for v in out if v in BF16_VARIANTS)}: this CPU has no BF16 support in "
                         f"OpenVINO (capabilities {openvino_capabilities()})")
    return out


def cpu_name() -> str:
    """The CPU model name as ``lscpu`` prints it (falls back to ``platform.processor()``)."""
    with contextlib.suppress(Exception):
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


# ----------------------------------------------------------------------------------------------------
# Files: export what the variants need
# ----------------------------------------------------------------------------------------------------


def export_variants(model: nn.Module, name: str, variants: Iterable[str], imgsz: int | Sequence[int], save_dir: Path,
                    data: str | Path = "data/shapes.yaml", calib_images: int = 300,
                    batch_size: int = 1) -> dict[str, Any]:
    """Export ``model`` (our ``Model``, any state) for each variant into ``save_dir``; returns ``{variant: target}``,
    the target being the fused float32 CPU model for ``pytorch`` and the exported file/folder otherwise."""
    from export import export_model

    variants = check_variants(variants)
    save_dir = Path(save_dir)
    save_dir.mkdir(parents=True, exist_ok=True)
    imgsz = [imgsz] if isinstance(imgsz, int) else list(imgsz)
    cpu = fused(model)  # as export.py exports a checkpoint
    kinds = {VARIANTS[v][0] for v in variants}
    made: dict[str, Path] = {}

    def export(stem: str, include: list[str], **kw) -> dict[str, dict]:
        return export_model(deepcopy(cpu), save_dir / f"{stem}.pt", include, imgsz=imgsz, batch_size=batch_size,
                            check=False, **kw)

    fp32 = [f for f, k in (("onnx", "onnx"), ("openvino", "openvino")) if k in kinds]
    if fp32:
        made |= {k: r["file"] for k, r in export(name, fp32).items()}
    int8 = [f for f, k in (("onnx", "onnx-int8"), ("openvino", "openvino-int8")) if k in kinds]
    if int8:
        made |= {f"{k}-int8": r["file"] for k, r in
                 export(name, int8, int8=True, data=data, calib_images=calib_images).items()}
    if "openvino-fp16" in kinds:
        made["openvino-fp16"] = export(f"{name}_fp16", ["openvino"], half=True)["openvino"]["file"]
    out: dict[str, Any] = {}
    for v in variants:
        kind = VARIANTS[v][0]
        out[v] = cpu if kind == "pt" else made[kind]
    return out


def fused(model: nn.Module) -> nn.Module:
    m = deepcopy(model).cpu().float().eval()
    if callable(getattr(m, "fuse", None)):
        m.fuse(verbose=False)
    return m


# ----------------------------------------------------------------------------------------------------
# Runners and timing
# ----------------------------------------------------------------------------------------------------


def runner(variant: str, target: Any, threads: int | None = None) -> Callable[[np.ndarray], np.ndarray]:
    """A function ``x (bs, 3, h, w) float32 -> (bs, 4 + nc, N)`` running ``target`` as ``variant`` says, with
    ``threads`` intra-op threads (default: ``torch.get_num_threads()``; for ``pytorch`` this sets the process-wide
    ``torch.set_num_threads``)."""
    kind, hint = VARIANTS[check_variants([variant])[0]]
    threads = threads or torch.get_num_threads()
    if kind == "pt":
        torch.set_num_threads(threads)
        model = target

        def run_pt(x: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                y = model(torch.from_numpy(x))
            return (y[0] if isinstance(y, (list, tuple)) else y).numpy()

        return run_pt
    if kind.startswith("onnx"):
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
        # idle workers must not spin: interleaved with other runtimes they would steal the cores
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = ort.InferenceSession(str(target), so, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return lambda x: session.run(None, {name: x})[0]
    import openvino as ov

    xml = next(Path(target).glob("*.xml")) if Path(target).is_dir() else Path(target)
    config = {"INFERENCE_PRECISION_HINT": hint, "INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY"}
    compiled = ov.Core().compile_model(str(xml), "CPU", config)
    return lambda x: compiled(x)[0]


def variant_calls(targets: dict[str, Any], im: np.ndarray, threads: int | None = None) -> dict[str, Callable[[], Any]]:
    """Zero-argument calls (one inference of ``im`` each) per variant, for ``time_interleaved`` or benchmarks.py's own
    interleaved timer."""
    x = np.ascontiguousarray(im, dtype=np.float32)
    return {v: (lambda f=runner(v, t, threads): f(x)) for v, t in targets.items()}


def time_interleaved(calls: dict[str, Callable[[], Any]], rounds: int = 30, warmup: int = 3,
                     seed: int = 0) -> dict[str, list[float]]:
    """Round-robin timing: ``warmup`` untimed rounds, then ``rounds`` rounds each calling every function once, in a
    fresh (seeded) random order per round so that no variant always follows the same one and machine drift hits all
    alike. Returns seconds per call."""
    names = list(calls)
    for _ in range(warmup):
        for k in names:
            calls[k]()
    times: dict[str, list[float]] = {k: [] for k in names}
    rng = np.random.default_rng(seed)
    for _ in range(rounds):
        for k in (names[i] for i in rng.permutation(len(names))):
            t = time.perf_counter()
            calls[k]()
            times[k].append(time.perf_counter() - t)
    return times


def latency_rows(times: dict[str, list[float]], baseline: str = "pytorch", threads: int | None = None) -> list[dict]:
    """One row per variant: median and min latency (ms), runs, speed-up over ``baseline`` (when timed), threads."""
    med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    threads = threads or torch.get_num_threads()
    return [{"variant": k, "latency_ms": med[k], "latency_min_ms": min(v) * 1e3, "runs": len(v),
             "speedup": med[baseline] / med[k] if baseline in med else None, "threads": threads}
            for k, v in times.items()]


# ----------------------------------------------------------------------------------------------------
# mAP of each variant, through val.py
# ----------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def openvino_precision(hint: str | None) -> Iterator[None]:
    """Within the block, every OpenVINO ``compile_model`` (AutoBackend's included) gets ``INFERENCE_PRECISION_HINT``
    ``hint``: AutoBackend compiles with the CPU's default, which is bf16 on CPUs with BF16 units."""
    if hint is None:
        yield
        return
    import openvino as ov

    original = ov.Core.compile_model

    def compile_model(self, model, device_name=None, config=None, **kwargs):
        return original(self, model, device_name, {**(config or {}), "INFERENCE_PRECISION_HINT": hint}, **kwargs)

    ov.Core.compile_model = compile_model
    try:
        yield
    finally:
        ov.Core.compile_model = original


def map_rows(weights: str | Path, data: str | Path, imgsz: int, save_dir: Path, variants: Iterable[str] | None = None,
             calib_images: int = 300, batch_size: int = 32, targets: dict[str, Any] | None = None) -> list[dict]:
    """mAP@.5 and mAP@.5:.95 (in %) of each variant of ``weights`` (a trained ``.pt``) on ``data``'s val split at
    ``imgsz`` via val.py's ``run()``. Exports at ``imgsz`` into ``save_dir`` unless ``targets`` (from
    ``export_variants``) are given.

    ``delta_map50_95`` is the difference to PyTorch's mAP@.5:.95. PyTorch runs val.py's default (rectangular batches of
    ``batch_size``, padded by half a stride), exports a fixed batch of 1 on square letterboxed images, so part of that
    difference is preprocessing; ``delta_vs_fp32_export`` compares with the fp32 export of the same runtime
    (``onnxruntime`` or ``openvino-f32``, when measured), which sees exactly the same inputs."""
    import val
    from utils.checkpoint import load_model

    variants = check_variants(variants or default_variants())
    weights = Path(weights)
    if targets is None:
        targets = export_variants(load_model(weights, fuse=False), weights.stem, variants, imgsz, save_dir,
                                  calib_images=calib_images, data=data)
    rows = []
    for v in variants:
        source = weights if VARIANTS[v][0] == "pt" else targets[v]
        with openvino_precision(VARIANTS[v][1]):
            stats = val.run(data=str(data), weights=[str(source)], imgsz=imgsz, batch_size=batch_size, device="cpu",
                            plots=False, project=Path(save_dir) / "val", name=v, exist_ok=True)[0]
        rows.append({"variant": v, "file": str(source), "map50": 100 * float(stats["metrics/mAP50(B)"]),
                     "map50_95": 100 * float(stats["metrics/mAP50-95(B)"])})
    by = {r["variant"]: r["map50_95"] for r in rows}
    for r in rows:
        fp32 = by.get("onnxruntime" if r["variant"].startswith("onnx") else "openvino-f32")
        r["delta_map50_95"] = r["map50_95"] - by["pytorch"] if "pytorch" in by else None
        r["delta_vs_fp32_export"] = None if r["variant"] == "pytorch" or fp32 is None else r["map50_95"] - fp32
    return rows


def markdown(rows: list[dict], keys: Sequence[str]) -> str:
    """A Markdown table of ``rows`` with columns ``keys`` (floats with 2 decimals, missing values blank)."""
    def cell(v: Any) -> str:
        return "" if v is None else f"{v:.2f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(cell(r.get(k)) for k in keys) + " |" for r in rows]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------
# Stand-alone: python -m utils.deploy --weights best.pt (until benchmarks.py --formats shows the same)
# ----------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> tuple[list[dict], list[dict]]:
    """Latency of every variant at ``--imgsz`` (batch 1) and, for a trained ``.pt``, mAP at ``--map-imgsz``."""
    import argparse

    from utils import offline

    offline.configure()
    from models.yolo import Model
    from utils.checkpoint import load_model

    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("--weights", default="models/yolov5s-ema.yaml", help="trained .pt, or a model YAML (latency only)")
    p.add_argument("--variants", default=",".join(default_variants()), help=f"from {', '.join(VARIANTS)}")
    p.add_argument("--data", default="data/shapes.yaml", help="calibration images and mAP")
    p.add_argument("--imgsz", type=int, default=640, help="latency image size")
    p.add_argument("--map-imgsz", type=int, default=0, help="mAP image size (0: no mAP)")
    p.add_argument("--rounds", type=int, default=50, help="timed round-robin rounds")
    p.add_argument("--threads", type=int, default=0, help="threads per runtime (0: torch.get_num_threads())")
    p.add_argument("--calib-images", type=int, default=300)
    p.add_argument("--save-dir", default="runs/deploy")
    opt = p.parse_args(argv)
    variants = check_variants(v.strip() for v in opt.variants.split(",") if v.strip())
    w, save_dir, threads = Path(opt.weights), Path(opt.save_dir), opt.threads or torch.get_num_threads()
    model = load_model(w, fuse=False) if w.suffix == ".pt" else Model(w, verbose=False).eval()
    targets = export_variants(model, w.stem, variants, opt.imgsz, save_dir / str(opt.imgsz), opt.data,
                              opt.calib_images)
    im = np.random.default_rng(0).random((1, 3, opt.imgsz, opt.imgsz), dtype=np.float32)
    lat = latency_rows(time_interleaved(variant_calls(targets, im, threads), rounds=opt.rounds), threads=threads)
    print(f"\nLatency, {opt.imgsz}x{opt.imgsz} batch 1, {cpu_name()}, {threads} threads, median of {opt.rounds} "
          f"interleaved runs\n" + markdown(lat, ["variant", "latency_ms", "latency_min_ms", "speedup"]))
    maps = []
    if opt.map_imgsz and w.suffix == ".pt":
        maps = map_rows(w, opt.data, opt.map_imgsz, save_dir / str(opt.map_imgsz), variants, opt.calib_images)
        print(f"\nmAP on {opt.data} val at {opt.map_imgsz}\n" +
              markdown(maps, ["variant", "map50", "map50_95", "delta_map50_95", "delta_vs_fp32_export"]))
    return lat, maps


if __name__ == "__main__":
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main()
