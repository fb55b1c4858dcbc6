"""CPU allocator setting shared by benchmarks.py, train.py, val.py and detect.py.

With glibc's default malloc every large tensor (above the 128 KiB-32 MiB dynamic mmap threshold) is mapped afresh and
returned to the OS when freed, so each forward pass page-faults its activations in again: on a small CPU that costs
more than some layers (about 20% of a yolov5s forward on the machine of the README's table) and penalises every extra
layer. ``keep_freed_memory`` tells malloc to keep freed memory for reuse instead.
"""

from __future__ import annotations

import ctypes
import sys

_STATE = {"tuned": False}  # whether this process already applied keep_freed_memory() successfully


def keep_freed_memory() -> bool:
    """Make glibc's malloc keep freed memory for reuse; True if applied (now or earlier), False where not glibc.

    Sets ``M_TRIM_THRESHOLD`` to 1 GiB, ``M_TOP_PAD`` to 256 MiB and ``M_MMAP_THRESHOLD`` to 32 MiB (its maximum), so
    tensors reuse already-mapped pages. The process keeps its peak heap instead of shrinking after it.
    """
    if _STATE["tuned"]:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # musl or another libc
        return False
    m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3
    settings = ((m_trim_threshold, 1 << 30), (m_top_pad, 256 << 20), (m_mmap_threshold, 32 << 20))
    _STATE["tuned"] = all(mallopt(k, v) == 1 for k, v in settings)
    return _STATE["tuned"]


def is_tuned() -> bool:
    return _STATE["tuned"]


def setting() -> str:
    """How the allocator is set, for a benchmark table's header."""
    return "malloc keeps freed memory" if _STATE["tuned"] else "stock malloc"


def keep_freed_memory_on_cpu(device: str | None) -> bool:
    """``keep_freed_memory()`` when ``device`` (a YOLOv5 ``--device`` value) runs the model on the CPU.

    train.py, val.py and detect.py call it: on CPU it made a yolov5s forward about 20% faster and the README's demo
    training 4-7% faster at the same peak memory. CUDA runs keep glibc's defaults (their tensors are not malloc's).
    """
    import torch

    spec = str(device or "").strip().lower()
    on_cpu = spec.startswith("cpu") or (spec in ("", "none") and not torch.cuda.is_available())
    return keep_freed_memory() if on_cpu else False
