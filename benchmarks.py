"""Benchmark the Table 2 models side by side with the EMA paper: size, GFLOPs, latency, memory, training speed, mAP.

Usage:
    python benchmarks.py                                   # every Table 2 model: CPU, 640x640, batch 1, PyTorch fp32
    python benchmarks.py --models s                        # a group (s or x-p2), or names, YAMLs, .pt weights
    python benchmarks.py --models yolov5s-ema --train      # + training step (forward + backward, batch 8, 320)
    python benchmarks.py --models s --formats onnx,openvino  # + ONNX Runtime / OpenVINO fp32, bf16, INT8 latency
    python benchmarks.py --map runs/train/exp/weights/best.pt --data coco.yaml   # + measured mAP next to the paper's
    python benchmarks.py --formats openvino-int8 --map best.pt  # + each runtime's mAP next to PyTorch's
    python benchmarks.py --modules                         # attention modules alone, forward and backward
    python benchmarks.py --device 0 --half                 # CUDA fp16

Each row is one model; ``x base`` columns divide by the baseline of the row's group (the same model without its
attention suffix, e.g. yolov5s for yolov5s-ema), which is benchmarked too when not asked for. All timings of one
table are taken in one process, interleaved round-robin (every model runs once per round, faster groups several
times), so machine drift hits every row alike; reported latencies are medians. The table goes to the screen as
Markdown and to ``runs/benchmarks/exp*/`` as ``benchmarks.csv`` and ``benchmarks.md`` (``deploy.csv`` with
``--formats``: one row per model and runtime variant of ``bench/deploy.py``).

Peak memory: bytes of tensors alive at the peak of one forward pass beyond those alive before it (so activations
and workspaces; weights excluded), from PyTorch's allocator events on CPU or ``max_memory_allocated`` on CUDA.

Allocator: on Linux/glibc the benchmark first tells malloc to keep freed memory (``utils/allocator.py``, as
train.py, val.py and detect.py do on CPU). With glibc's defaults every large tensor is paged in afresh by the
kernel, which on CPU costs more than some of the layers themselves (about 20% of a yolov5s forward on the machine
of the README's table) and penalises every extra layer; ``--stock-malloc`` measures with the defaults.

The work is done by the ``bench`` package (see its ``__init__``); this file is its command line.
"""

from __future__ import annotations

import argparse
import sys

from bench import BenchmarkError
from bench.common import PROJECT
from bench.model_bench import run
from bench.module_bench import run_modules
from bench.timing import CLOCKS
from utils import offline

offline.configure()


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
                        "variants) or variant names from bench/deploy.py, e.g. openvino-int8")
    p.add_argument("--calib-images", type=int, default=100, help="INT8 calibration images from --data's train split")
    p.add_argument("--train", action="store_true", help="also time a training step (forward + loss + backward)")
    p.add_argument("--train-batch-size", type=int, default=8, help="batch size of the --train step")
    p.add_argument("--train-imgsz", type=int, default=320, help="image size of the --train step")
    p.add_argument("--map", nargs="+", default=None, metavar="WEIGHTS", help="validate these .pt weights (val.py) "
                   "and show their mAP next to the paper's; they become rows of the table")
    p.add_argument("--data", default="data/shapes.yaml", help="dataset.yaml for --map and INT8 calibration")
    p.add_argument("--plot", action="store_true", help="save latency vs GFLOPs (and vs mAP) as benchmarks.png")
    p.add_argument("--modules", action="store_true", help="time the attention modules alone instead of the models")
    p.add_argument("--project", default=str(PROJECT), help="save to project/name")
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
