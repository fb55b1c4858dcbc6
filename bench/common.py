"""What every benchmark table needs: the device, the run folder, the allocator setting, the header describing the
machine, and checks of flag combinations that cannot run."""

from __future__ import annotations

import contextlib
import platform
from datetime import date
from pathlib import Path

import torch

from bench import BenchmarkError, log
from bench.timing import CLOCKS
from utils import allocator

ROOT = Path(__file__).resolve().parents[1]
PROJECT = ROOT / "runs" / "benchmarks"


def configure_malloc(stock: bool) -> str:
    """Keep freed memory (``utils.allocator``) unless ``stock``; return how the allocator is set, for the header."""
    if not stock:
        allocator.keep_freed_memory()
    elif allocator.is_tuned():
        log("benchmarks: warning: malloc was already tuned in this process; --stock-malloc needs a fresh process")
    return allocator.setting()


def select_device(device: str) -> torch.device:
    """``--device`` through the project's ``select_device``; a device that is not there is a ``BenchmarkError``."""
    from utils.engine import select_device as engine_select_device

    try:
        return engine_select_device(device)
    except ValueError as e:
        why = "no CUDA device is available" if not torch.cuda.is_available() else str(e).strip().splitlines()[0]
        raise BenchmarkError(f"--device {device}: {why}; use --device cpu") from None


def save_dir_for(project: str | Path, name: str, exist_ok: bool = False) -> Path:
    """The run folder ``project/name`` (exp, exp2, ... as YOLOv5), created."""
    from utils.engine import increment_dir

    save_dir = increment_dir(Path(project) / name, exist_ok)
    save_dir.mkdir(parents=True, exist_ok=True)
    return save_dir


def machine() -> str:
    """The CPU's model name, as lscpu shows it."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def environment(device: torch.device, malloc: str = "stock malloc") -> str:
    """A table header's description of where it was measured: date, processor, torch, threads, allocator."""
    hw = torch.cuda.get_device_name(device) if device.type == "cuda" else machine()
    threads = torch.get_num_threads()
    return f"{date.today().isoformat()} · {hw} · torch {torch.__version__} · {threads} CPU threads · {malloc}"


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
