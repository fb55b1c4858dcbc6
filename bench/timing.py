"""Timing: every function of a table run in interleaved round-robin rounds (so machine drift hits all alike), and the
peak memory of one call."""

from __future__ import annotations

import contextlib
import os
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable

import torch

from bench import log

MAX_MULTIPLICITY = 10  # a faster group runs at most this many times per round
MIN_ROUNDS, MAX_ROUNDS = 3, 200


def synchronizer(device: torch.device) -> Callable[[], None]:
    return torch.cuda.synchronize if device.type == "cuda" else (lambda: None)


CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.process_time}


def _timed(fn: Callable[[], Any], sync: Callable[[], None], clock: Callable[[], float] = time.perf_counter) -> float:
    sync()
    t = clock()
    fn()
    sync()
    return clock() - t


def multiplicities(estimates: dict[str, float], groups: dict[str, str]) -> dict[str, int]:
    """Runs per round for each function: groups faster than the slowest run proportionally more (capped)."""
    if not estimates or min(estimates.values()) <= 0:
        return {k: 1 for k in groups}
    group_cost: dict[str, list[float]] = {}
    for k, t in estimates.items():
        group_cost.setdefault(groups[k], []).append(t)
    mean = {g: statistics.fmean(v) for g, v in group_cost.items()}
    slowest = max(mean.values())
    per_group = {g: max(1, min(MAX_MULTIPLICITY, round(slowest / m))) for g, m in mean.items()}
    return {k: per_group[groups[k]] for k in groups}


def interleaved(fns: dict[str, Callable[[], Any]], groups: dict[str, str] | None = None, repeats: int | None = None,
                warmup: int = 2, budget_s: float = 120.0, sync: Callable[[], None] = lambda: None,
                label: str = "timing", clock: str = "wall") -> dict[str, list[float]]:
    """Time every function in round-robin rounds; returns each one's list of seconds.

    ``warmup`` untimed rounds come first (the last one estimates each function's cost). Functions of a faster group
    (``groups`` maps function -> group; rows compared with each other share one) run several times per round so all
    get similar time. ``repeats`` is the number of rounds; ``None`` fits them into about ``budget_s`` seconds.
    ``clock`` is ``wall`` (elapsed time) or ``cpu`` (this process's CPU time: with one thread, the work itself without
    the time other processes on a shared machine take from it).
    """
    groups = groups or {k: k for k in fns}
    tick = CLOCKS[clock]
    estimates: dict[str, float] = {}
    for _ in range(warmup if repeats is not None else max(warmup, 1)):
        estimates = {k: _timed(fn, sync, tick) for k, fn in fns.items()}
    mult = multiplicities(estimates, groups)
    if repeats is None:
        if sum(mult[k] * t for k, t in estimates.items()) * MIN_ROUNDS > budget_s:
            mult = {k: 1 for k in fns}  # the budget does not allow extra runs of the faster groups
        round_cost = sum(mult[k] * t for k, t in estimates.items())
        repeats = max(MIN_ROUNDS, min(MAX_ROUNDS, int(budget_s / max(round_cost, 1e-9))))
    log(f"benchmarks: {label}: {repeats} rounds of {sum(mult.values())} runs (up to {max(mult.values())} per function)")
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for j in range(max(mult.values())):
            for k, fn in fns.items():
                if j < mult[k]:
                    times[k].append(_timed(fn, sync, tick))
    return times


def median_ms(ts: list[float]) -> float:
    return statistics.median(ts) * 1e3


@dataclass(frozen=True)
class Timing:
    """How to time: ``repeats`` rounds (``None``: as many as fit in ``budget`` seconds) after ``warmup`` rounds."""

    repeats: int | None = None
    warmup: int = 2
    budget: float = 150.0
    clock: str = "wall"
    sync: Callable[[], None] = lambda: None

    def __call__(self, fns: dict[str, Callable[[], Any]], groups: dict[str, str], label: str,
                 min_warmup: int = 0) -> dict[str, list[float]]:
        return interleaved(fns, groups, self.repeats, max(self.warmup, min_warmup), self.budget, self.sync, label,
                           self.clock)


@contextlib.contextmanager
def quiet_stderr() -> Any:
    """Silence file descriptor 2 in the block: the profiler's C++ backend prints start/stop lines there."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def peak_memory_mb(fn: Callable[[], Any], device: torch.device) -> float:
    """Peak bytes of tensors alive during ``fn()`` beyond those alive before it, in MiB."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated(device) - before) / 2**20
    with quiet_stderr(), torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU],
                                                profile_memory=True) as prof:
        fn()
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    live = peak = 0
    for e in sorted(events, key=lambda e: e.start_ns()):
        live += e.nbytes()
        peak = max(peak, live)
    return peak / 2**20
