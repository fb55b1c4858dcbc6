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


def check_image_size(flag: str, sizes: int | Iterable[int] | None, max_values: int = 2) -> None:
    """One or ``max_values`` positive image sizes in pixels (rounding to the stride comes once the model is known)."""
    if sizes is None:
        return
    sizes = [sizes] if isinstance(sizes, int) else list(sizes)
    if not 1 <= len(sizes) <= max_values:
        raise ArgumentError(f"{flag} {' '.join(map(str, sizes))}: give one size"
                            f"{' or two (height width)' if max_values == 2 else ''} in pixels, e.g. {flag} 640")
    if any(s < 1 for s in sizes):
        raise ArgumentError(f"{flag} {' '.join(map(str, sizes))}: image sizes must be positive (pixels), "
                            f"e.g. {flag} 640")


@contextlib.contextmanager
def no_empty_run_dir(folder: str | Path | None) -> Iterator[None]:
    """If the block fails, remove ``folder`` when the block created it and wrote no result into it.

    Files that only describe the run (``args.yaml``) do not count as results; a folder that existed before is kept.
    """
    folder = Path(folder) if folder else None
    existed = folder is None or folder.exists()
    try:
        yield
    except BaseException:
        if not existed:
            remove_if_empty(folder)
        raise


def remove_if_empty(folder: Path) -> bool:
    """Delete a run folder that holds no file other than ``args.yaml``; returns whether it was deleted."""
    if folder.is_dir() and not any(f.is_file() and f.name != "args.yaml" for f in folder.rglob("*")):
        shutil.rmtree(folder, ignore_errors=True)
        return True
    return False
