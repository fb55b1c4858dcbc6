"""Compile a C source of this repository once per machine and load it with ctypes.

The library is built with the system C compiler (``$CC``, else ``cc``) for this CPU (``-march=native``) and
OpenMP, into ``$YOLOV5_ATTENTION_CACHE`` (default ``~/.cache/yolov5-attention/native``) under a name that hashes
the source, the flags, the compiler and the CPU, so an edit, another compiler or another machine sharing the
cache gets its own build. The build writes to a temporary file that is renamed into place, so concurrent
processes (DDP ranks, test workers) never load a half-written library. Without a working compiler, ``load``
warns once and returns ``None``, and callers keep their PyTorch code path; ``YOLOV5_ATTENTION_NATIVE=0`` turns
native code off.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import platform
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path

LOGGER = logging.getLogger("yolov5-attention")

FLAGS = ("-O3", "-march=native", "-fopenmp", "-fno-math-errno", "-fno-trapping-math", "-fno-signed-zeros",
         "-fassociative-math", "-shared", "-fPIC")


def cache_dir() -> Path:
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "yolov5-attention" / "native"
    return Path(os.environ.get("YOLOV5_ATTENTION_CACHE", default))


def enabled() -> bool:
    return os.environ.get("YOLOV5_ATTENTION_NATIVE", "1") != "0" and platform.system() in ("Linux", "Darwin")


def _cpu_id() -> str:
    try:  # model name and feature flags: what -march=native compiles for
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return "".join(sorted({line for line in lines if line.startswith(("model name", "flags"))}))
    except OSError:
        return platform.processor() or platform.machine()


def _compiler_version(cc: list[str]) -> str:
    try:
        return subprocess.run([*cc, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def build(source: Path, cc: str | None = None) -> Path:
    """The shared library of ``source``, compiled unless the cache has it; raises ``RuntimeError`` on failure."""
    cc = cc or os.environ.get("CC", "cc")
    command = shlex.split(cc)  # CC may carry a launcher or flags ("ccache gcc", "gcc -m64")
    if not command or shutil.which(command[0]) is None:
        raise RuntimeError(f"no C compiler '{cc}' on PATH (set CC, or install gcc/clang)")
    text = source.read_bytes()
    key = hashlib.sha256(b"\0".join([text, " ".join([*command, *FLAGS]).encode(), _compiler_version(command).encode(),
                                     _cpu_id().encode()])).hexdigest()[:16]
    target = cache_dir() / f"{source.stem}-{key}.so"
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        result = subprocess.run([*command, *FLAGS, str(source), "-o", tmp, "-lm"], capture_output=True, text=True,
                                timeout=300)
        if result.returncode != 0:
            raise RuntimeError(f"{cc} failed on {source}:\n{result.stderr.strip()[-2000:]}")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return target


@functools.lru_cache(maxsize=None)
def load(source: Path) -> ctypes.CDLL | None:
    """``source``'s library (built on first use), or ``None`` with one warning when it cannot be built or loaded."""
    if not enabled():
        return None
    try:
        return ctypes.CDLL(str(build(source)))
    except (RuntimeError, OSError, subprocess.SubprocessError) as e:
        LOGGER.warning(f"WARNING ⚠️ native {source.name} unavailable, using PyTorch ops instead (slower on CPU): "
                       f"{e}")
        return None
