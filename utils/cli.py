"""Command-line helpers shared by train.py, val.py, detect.py and export.py."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

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
