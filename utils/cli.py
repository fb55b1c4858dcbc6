"""Command-line helpers shared by train.py, val.py, detect.py and export.py."""

from __future__ import annotations

import contextlib
import shutil
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

# Errors that mean "the user gave us something wrong": print one clear line, no stack trace.
USER_ERRORS: tuple[type[BaseException], ...] = (FileNotFoundError, NotADirectoryError, PermissionError, ValueError,
                                                 KeyError, SyntaxError)


@contextlib.contextmanager
def user_errors(exit_code: int = 1) -> Iterator[None]:
    """Turn user mistakes (missing files, bad YAML keys, bad values) into a one-line message and an exit code.

    Set ``YOLOV5A_TRACEBACK=1`` to see the full stack trace instead.
    """
    import os

    try:
        yield
    except KeyboardInterrupt:
        print("Interrupted", file=sys.stderr)
        raise SystemExit(130) from None
    except USER_ERRORS as e:
        if os.environ.get("YOLOV5A_TRACEBACK"):
            raise
        print(f"ERROR: {describe(e)}", file=sys.stderr)
        raise SystemExit(exit_code) from None
    except OSError as e:  # a full disk anywhere (results.csv, plots, exports): say so in one line
        import errno

        if os.environ.get("YOLOV5A_TRACEBACK") or e.errno != errno.ENOSPC:
            raise
        where = f" writing {e.filename}" if e.filename else ""
        print(f"ERROR: the disk is full (ENOSPC: no space left on device){where}; free disk space and run again",
              file=sys.stderr)
        raise SystemExit(exit_code) from None
    except RuntimeError as e:  # the engine wraps dataset problems as RuntimeError("Dataset '...' error ❌ ...")
        if os.environ.get("YOLOV5A_TRACEBACK") or "Dataset" not in str(e):
            raise
        print(f"ERROR: {describe(e)}", file=sys.stderr)
        raise SystemExit(exit_code) from None


def describe(e: BaseException) -> str:
    """The error's message, followed by its cause's when the engine wrapped one, without terminal colour codes."""
    import re

    parts = [str(e)]
    if e.__cause__ is not None and str(e.__cause__) not in parts[0]:
        parts.append(f"({e.__cause__})")
    return re.sub(r"\x1b\[[0-9;]*m", "", " ".join(parts))


DNN_NOTE = "--dnn: not used: ONNX files run on ONNX Runtime here, not on OpenCV DNN"


class ArgumentError(ValueError):
    """A command-line value out of range; the message names the flag and the values it takes."""


def check_number(flag: str, value: float | None, low: float | None = None, high: float | None = None,
                 also: dict | None = None) -> None:
    """``low <= value <= high`` (either bound optional; ``None`` means the flag was left to its default).

    ``also`` maps extra values with a meaning of their own to that meaning (``{-1: "autobatch"}``).
    """
    if value is None or value in (also or {}):
        return
    if (low is not None and value < low) or (high is not None and value > high):
        if high is not None:
            want = f"between {low} and {high}"
        else:
            want = "a positive integer" if low == 1 and isinstance(value, int) else f"at least {low}"
        extra = "".join(f" (or {k} for {v})" for k, v in (also or {}).items())
        raise ArgumentError(f"{flag} {value}: must be {want}{extra}")


# The largest image size any script takes (pixels, per side): 16384 = 2**14, a 268-megapixel input, four times the
# side of the largest aerial/satellite tiles YOLOv5 users detect on, and far below OpenCV's 2**30-pixel limit for one
# image. Beyond it a letterboxed image alone needs gigabytes and OpenCV fails to allocate it.
MAX_IMAGE_SIZE = 16384


def check_image_size(flag: str, sizes: int | Iterable[int] | None, max_values: int = 2) -> None:
    """One or ``max_values`` image sizes in pixels, each in 1..MAX_IMAGE_SIZE (rounding to the stride comes once the
    model is known)."""
    if sizes is None:
        return
    sizes = [sizes] if isinstance(sizes, int) else list(sizes)
    if not 1 <= len(sizes) <= max_values:
        raise ArgumentError(f"{flag} {' '.join(map(str, sizes))}: give one size"
                            f"{' or two (height width)' if max_values == 2 else ''} in pixels, e.g. {flag} 640")
    if any(s < 1 for s in sizes):
        raise ArgumentError(f"{flag} {' '.join(map(str, sizes))}: image sizes must be positive (pixels), "
                            f"e.g. {flag} 640")
    if any(s > MAX_IMAGE_SIZE for s in sizes):
        raise ArgumentError(f"{flag} {' '.join(map(str, sizes))}: image sizes are at most {MAX_IMAGE_SIZE} pixels; "
                            f"use a smaller size (e.g. {flag} 1280), or cut large images into tiles")


def check_device(device: object, flag: str = "--device") -> None:
    """A ``--device`` that names CUDA GPUs (``0``, ``0,1``, ``cuda``, ``cuda:1``) must name GPUs torch can see.

    ``''`` (automatic), ``cpu``, ``mps`` and other accelerators (``npu``, ``xpu``...) are left to the engine. The
    message names the flag, the value given and what to do, instead of the engine's ``Invalid CUDA 'device=0'``.
    """
    import os

    text = str(device if device is not None else "").strip()
    value = text.lower()
    for ch in "()[]' ":
        value = value.replace(ch, "")
    if value in ("", "cpu", "mps", "mps:0") or value.startswith(("npu", "xpu", "tpu", "intel", "vulkan", "-1")):
        return
    ids = [x for x in value.replace("cuda:", "").replace("cuda", "0").split(",") if x]
    if not ids or not all(x.isdigit() for x in ids):
        raise ArgumentError(f"{flag} {text}: not a device; use {flag} cpu, or CUDA GPU numbers such as {flag} 0 or "
                            f"{flag} 0,1,2,3")
    import torch

    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if not torch.cuda.is_available():
        if torch.version.cuda is None:
            why = "this torch build has no CUDA support"
        elif visible is not None and not visible.strip():
            why = "CUDA_VISIBLE_DEVICES is empty"
        else:
            why = "torch sees no CUDA GPU on this machine"
        raise ArgumentError(f"{flag} {text}: no CUDA GPU is visible ({why}); use {flag} cpu")
    n = torch.cuda.device_count()
    if visible is None and any(int(x) >= n for x in ids):  # with CUDA_VISIBLE_DEVICES the engine maps physical ids
        have = "0" if n == 1 else f"0-{n - 1}"
        raise ArgumentError(f"{flag} {text}: this machine has {n} CUDA GPU(s), numbered {have}; use e.g. {flag} 0, "
                            f"or {flag} cpu")


@contextlib.contextmanager
def no_empty_run_dir(folder: str | Path | None) -> Iterator[None]:
    """The block is the run using ``folder``: if it fails, remove ``folder`` when this run created it (claimed it new,
    or it did not exist) and wrote no result into it; when it ends, release the folder's lock (``utils.rundir``).

    Files that only describe the run (``args.yaml``, the lock) do not count as results; a folder that existed before is
    kept.
    """
    from utils.rundir import created_by_claim, release_run_dir

    folder = Path(folder) if folder else None
    existed = folder is None or (folder.exists() and not created_by_claim(folder))
    try:
        yield
    except BaseException:
        if not existed:
            remove_if_empty(folder)
        raise
    finally:
        release_run_dir(folder)


NOT_RESULTS = ("args.yaml", ".lock")  # files a run folder holds before the run has written anything


def remove_if_empty(folder: Path) -> bool:
    """Delete a run folder holding no file but ``args.yaml`` (and its lock); returns whether it was deleted."""
    if folder.is_dir() and not any(f.is_file() and f.name not in NOT_RESULTS for f in folder.rglob("*")):
        shutil.rmtree(folder, ignore_errors=True)
        return True
    return False
