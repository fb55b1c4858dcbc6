"""The attention modules alone (``python benchmarks.py --modules``): forward and forward + backward of each module at
every shape where it sits in a Table 2 model, all interleaved."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterable

import torch
import torch.nn as nn

from bench import log
from bench.common import PROJECT, check_options, configure_malloc, environment, save_dir_for, select_device
from bench.paper import MODULE_SITES
from bench.report import Column, markdown_table, write_csv
from bench.timing import Timing, median_ms, synchronizer
from models.attention import build_attention
from utils.module_cost import module_cost, trains_at

MODULE_COLUMNS = [
    Column("module", "module"), Column("models", "in"), Column("shape", "shape (BCHW)"), Column("params", "params"),
    Column("gflops", "GFLOPs", "{:.4f}"), Column("fwd_ms", "fwd (ms)", "{:.3f}"),
    Column("fwd_bwd_ms", "fwd+bwd (ms)", "{:.3f}"), Column("note", "note"),
]


def module_sites(imgsz: int, families: Iterable[str] = tuple(MODULE_SITES)) -> list[tuple[str, str, int, int]]:
    """(module, family, channels, size) for every attention module at every place it sits in a Table 2 model."""
    sites = []
    for fam in families:
        names, places = MODULE_SITES[fam]
        for c, stride in dict.fromkeys(places):
            sites += [(n, fam, c, max(imgsz // stride, 1)) for n in names]
    return sites


def module_calls(module: nn.Module, x: torch.Tensor) -> dict[str, Callable[[], Any]]:
    """Forward (eval, inference mode) and forward + backward (train mode, or eval mode where the batch is too small
    to train the module: ``utils.module_cost.trains_at``) of ``module`` on ``x``."""
    train = trains_at(module, x)
    xg = x.detach().clone().requires_grad_(True)

    def fwd() -> Any:
        module.eval()
        with torch.inference_mode():
            return module(x)

    def fwd_bwd() -> None:
        module.train(train)
        module(xg).square().mean().backward()
        module.zero_grad(set_to_none=True)
        xg.grad = None

    return {"fwd": fwd, "fwd_bwd": fwd_bwd}


def time_modules_at(names: list[str], shape: tuple[int, int, int, int], device: torch.device,
                    timing: Timing) -> dict[str, dict[str, float]]:
    """Median ms of every call of ``module_calls`` for each named module at ``shape`` (all interleaved)."""
    x = torch.randn(*shape, device=device)
    calls = {f"{n}|{k}": f for n in names for k, f in module_calls(build_attention(n, shape[1]).to(device), x).items()}
    times = timing(calls, {k: "all" for k in calls}, f"modules at {'x'.join(map(str, shape))}")
    out: dict[str, dict[str, float]] = {n: {} for n in names}
    for key, ts in times.items():
        n, what = key.split("|")
        out[n][f"{what}_ms"] = median_ms(ts)
    return out


def run_modules(imgsz: int = 640, batch_size: int = 1, device: str = "cpu", threads: int | None = None,
                repeats: int | None = None, warmup: int = 2, budget: float = 60.0, clock: str = "wall",
                project: str | Path = PROJECT, name: str = "modules", exist_ok: bool = False,
                families: Iterable[str] = tuple(MODULE_SITES), stock_malloc: bool = False) -> list[dict]:
    """Time each attention module alone at its Table 2 shapes; print the table, save it to ``project/name``."""
    if threads:
        torch.set_num_threads(threads)
    malloc = configure_malloc(stock_malloc)
    dev = select_device(device)
    check_options(dev, False, clock, {}, [], [])
    save_dir = save_dir_for(project, name, exist_ok)
    sites = module_sites(imgsz, families)
    places = list(dict.fromkeys((c, size) for _, _, c, size in sites))
    timing = Timing(repeats, warmup, budget / max(len(places), 1), clock, synchronizer(dev))
    rows = []
    for c, size in places:
        here = [(n, fam) for n, fam, c2, s2 in sites if (c2, s2) == (c, size)]
        names = list(dict.fromkeys(n for n, _ in here))
        medians = time_modules_at(names, (batch_size, c, size, size), dev, timing)
        for n in names:
            cost = module_cost(n, c, size, batch_size)
            rows.append({"module": n, "models": ", ".join(sorted({f for m, f in here if m == n})),
                         "shape": f"{batch_size}x{c}x{size}x{size}", "params": cost["params"],
                         "gflops": cost["gflops"], **medians[n],
                         "note": "" if cost["trains"] else "fwd+bwd with BatchNorm in eval mode"})
    what = "CPU time" if clock == "cpu" else "latency"
    header = (f"Attention modules {environment(dev, malloc)} · shapes at {imgsz}x{imgsz} · {what}: medians of "
              "interleaved runs")
    table = markdown_table(rows, MODULE_COLUMNS)
    log(f"\n{header}\n\n{table}\n")
    (save_dir / "modules.md").write_text(f"{header}\n\n{table}\n", encoding="utf-8")
    log(f"benchmarks: saved {write_csv(rows, save_dir / 'modules.csv')}")
    return rows
