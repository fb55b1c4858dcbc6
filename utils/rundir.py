"""Run folders (``runs/train/exp``, ``exp2``...) claimed atomically and locked while a run uses them.

Every script that writes a run folder gets it from ``claim_run_dir`` (through ``utils.engine.increment_dir``):

- Without ``exist_ok`` the folder is *created* by this process with ``mkdir(exist_ok=False)``; when another process
  created that name first (two trainings started together), the next number is tried. Two runs never share a folder.
- With ``exist_ok`` (``--exist-ok``) the named folder is reused, but only by one live process at a time: the folder's
  lock file ``.lock`` holds the process id (and host) of the run using it. A second run refuses while that process
  is alive (``os.kill(pid, 0)``) and takes the folder over when it is dead (killed, power cut). ``lock_run_dir`` does
  the same for a folder a run continues in (``--resume``, a continued ``--evolve`` search).
- Locks are released when the run ends (``release_run_dir``) and, as a fallback, when the process exits.
- In a job of several processes (``torch.distributed.run``) only rank 0 claims and locks; the other ranks get the
  name rank 0 would take, without creating it, and receive rank 0's folder from it.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import socket
import threading
from pathlib import Path

LOCK_NAME = ".lock"
MAX_RUNS = 100_000  # exp .. exp99999: the numbers tried before giving up

_held: set[Path] = set()  # folders whose lock this process holds
_created: set[Path] = set()  # folders this process created by claiming them
_mutex = threading.Lock()


class RunDirError(ValueError):
    """A run folder that cannot be taken: in use by another live run, or no free name."""


def _rank() -> int:
    return int(os.environ.get("RANK", -1))


def _candidates(path: Path):
    yield path
    for n in range(2, MAX_RUNS):
        yield path.with_name(f"{path.name}{n}")


def claim_run_dir(path: str | Path, exist_ok: bool = False, what: str = "--name") -> Path:
    """Create (or with ``exist_ok`` reuse) and lock the run folder ``path``, else ``path2``, ``path3``...; return it.

    ``what`` names the flag in errors. Ranks other than 0 of a distributed job only compute the name (see module doc).
    """
    path = Path(path)
    if _rank() > 0:
        return path if exist_ok else next(p for p in _candidates(path) if not p.exists())
    if exist_ok:
        new = not path.exists()
        path.mkdir(parents=True, exist_ok=True)
        lock_run_dir(path, what=f"{what} {path.name} --exist-ok")
        if new:
            _created.add(path.resolve())
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    for p in _candidates(path):
        try:
            p.mkdir()
        except FileExistsError:
            continue  # an earlier run's folder, or one another process has just created
        try:
            lock_run_dir(p, what=what)
        except RunDirError:
            continue  # a run with --exist-ok took this new name at the same moment: leave it to that run
        _created.add(p.resolve())
        return p
    raise RunDirError(f"{what} {path.name}: no free run folder name left in {path.parent} "
                      f"({path.name} .. {path.name}{MAX_RUNS - 1} exist); choose another --name or --project")


def created_by_claim(folder: str | Path) -> bool:
    """Whether this process created ``folder`` when it claimed it (so it may remove it again if nothing was written)."""
    return Path(folder).resolve() in _created


def _read_lock(lock: Path) -> tuple[int, str] | None:
    """``(pid, host)`` of a lock file, or None when it is gone or not a lock this module wrote."""
    try:
        fields = lock.read_text(encoding="utf-8").split()
        return int(fields[0]), fields[1] if len(fields) > 1 else socket.gethostname()
    except (OSError, ValueError, IndexError):
        return None


def _alive(pid: int, host: str) -> bool:
    """Whether the lock's process still runs (a lock taken on another machine is taken as alive)."""
    if host != socket.gethostname():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    except OSError:
        return False
    return True


def lock_run_dir(folder: str | Path, what: str = "run folder",
                 hint: str = "wait for that run to end, or choose another --name") -> None:
    """Take the lock of the existing run ``folder`` for this process; ``RunDirError`` while another live run holds it.

    The lock is written completely under a private name and then hard-linked as ``.lock``, which succeeds for exactly
    one process; a dead holder's lock is moved aside (one process wins that rename) and the link retried.
    """
    if _rank() > 0:
        return  # rank 0 locks for the job
    folder = Path(folder)
    key = folder.resolve()
    lock = folder / LOCK_NAME
    me, host = os.getpid(), socket.gethostname()
    with _mutex:
        if key in _held and _read_lock(lock) == (me, host):
            return
        mine = folder / f"{LOCK_NAME}.{me}.{threading.get_ident()}"
        mine.write_text(f"{me} {host}\n", encoding="utf-8")
        try:
            for _ in range(100):
                try:
                    os.link(mine, lock)
                    break
                except FileExistsError:
                    pass
                except OSError:  # a file system without hard links: exclusive creation instead
                    try:
                        fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                    except FileExistsError:
                        pass
                    else:
                        with os.fdopen(fd, "w", encoding="utf-8") as f:
                            f.write(f"{me} {host}\n")
                        break
                holder = _read_lock(lock)
                if holder is None:  # gone in between, or not a lock (empty, edited): take it over
                    if lock.exists():
                        _move_aside(lock, None)
                    continue
                if holder == (me, host):
                    break  # taken by this process before (another claim of the same folder)
                if _alive(*holder):
                    pid, where = holder
                    on = "" if where == host else f" on {where}"
                    raise RunDirError(f"{what}: run folder {folder} is in use by process {pid}{on} (lock file "
                                      f"{lock}); {hint}")
                _move_aside(lock, holder)  # its process is dead: take the folder over
            else:
                raise RunDirError(f"{what}: could not take the lock {lock} (other processes keep replacing it)")
        finally:
            mine.unlink(missing_ok=True)
        _held.add(key)


def _move_aside(lock: Path, holder: tuple[int, str] | None) -> None:
    """Remove a stale ``lock`` whose content was ``holder``, without ever removing a lock another process just took."""
    aside = lock.with_name(f"{LOCK_NAME}.stale.{os.getpid()}.{threading.get_ident()}")
    try:
        os.rename(lock, aside)
    except FileNotFoundError:
        return  # another process moved it first
    moved = _read_lock(aside)
    if moved != holder and moved is not None:  # a live run's lock replaced the stale one in between: give it back
        with contextlib.suppress(FileExistsError):
            os.link(aside, lock)
    aside.unlink(missing_ok=True)


def release_run_dir(folder: str | Path | None) -> None:
    """Remove ``folder``'s lock if this process holds it (nothing otherwise)."""
    if folder is None:
        return
    folder = Path(folder)
    key = folder.resolve()
    with _mutex:
        if key not in _held:
            return
        _held.discard(key)
        lock = folder / LOCK_NAME
        if _read_lock(lock) == (os.getpid(), socket.gethostname()):
            lock.unlink(missing_ok=True)


@atexit.register
def _release_all() -> None:
    for folder in list(_held):
        with contextlib.suppress(OSError):
            release_run_dir(folder)
