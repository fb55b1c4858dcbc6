"""The benchmark's output: Markdown tables whose columns follow the data, CSV files, and latency plots."""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import log


@dataclass(frozen=True)
class Column:
    key: str
    header: str
    fmt: str = "{}"


def columns_for(rows: list[dict]) -> list[Column]:
    """The table's columns: always size, GFLOPs and latency; the others when some row has them."""
    cols = [
        Column("model", "model"), Column("params_m", "params (M)", "{:.2f}"),
        Column("paper_params_m", "paper", "{:.2f}"), Column("d_params_m", "Δ (M)", "{:+.3f}"),
        Column("gflops", "GFLOPs", "{:.2f}"), Column("paper_gflops", "paper", "{:.2f}"),
        Column("d_gflops_pct", "Δ %", "{:+.1f}"),
        Column("latency_ms", "latency (ms)", "{:.1f}"), Column("rel_latency", "× base", "{:.3f}"),
        Column("peak_mem_mb", "peak mem (MB)", "{:.1f}"),
        Column("train_step_ms", "train step (ms)", "{:.0f}"), Column("train_img_s", "train img/s", "{:.1f}"),
        Column("rel_train", "× base", "{:.3f}"),
        Column("map50", "mAP50", "{:.1f}"), Column("paper_map50", "paper", "{:.1f}"),
        Column("map50_95", "mAP50-95", "{:.1f}"), Column("paper_map50_95", "paper", "{:.1f}"),
    ]
    optional = {"paper_params_m", "d_params_m", "paper_gflops", "d_gflops_pct", "rel_latency", "peak_mem_mb",
                "train_step_ms", "train_img_s", "rel_train", "map50", "map50_95"}
    present = {k for r in rows for k, v in r.items() if v is not None}
    keep = []
    for c in cols:
        if c.key in optional and c.key not in present:
            continue
        if c.key.startswith("paper_map") and c.key.removeprefix("paper_") not in present:
            continue  # paper mAP only next to a measured one
        keep.append(c)
    return keep


def cell(value: Any, fmt: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return value if isinstance(value, str) else fmt.format(value)


def markdown_table(rows: list[dict], columns: list[Column]) -> str:
    lines = ["| " + " | ".join(c.header for c in columns) + " |", "|" + "|".join(" --- " for _ in columns) + "|"]
    lines += ["| " + " | ".join(cell(r.get(c.key), c.fmt) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def write_csv(rows: list[dict], path: Path) -> Path:
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows({k: ("" if r.get(k) is None else r.get(k)) for k in keys} for r in rows)
    return path


def add_relative(rows: list[dict], key: str, out: str) -> None:
    """``out`` = row[key] / baseline row[key], the baseline being the row named ``baseline_name(row)``."""
    by_name = {r["model"]: r for r in rows}
    for r in rows:
        base = by_name.get(r["baseline"])
        ok = base is not None and r.get(key) is not None and base.get(key)
        r[out] = r[key] / base[key] if ok else None


def plot(rows: list[dict], path: Path) -> Path:
    """Latency against GFLOPs (and against mAP when measured), one colour per group."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = [("gflops", "GFLOPs")] + ([("map50_95", "mAP@.5:.95 (%)")] if any(r.get("map50_95") for r in rows) else [])
    fig, axes = plt.subplots(1, len(xs), figsize=(6 * len(xs), 4.5), squeeze=False)
    groups = list(dict.fromkeys(r["baseline"] for r in rows))
    for ax, (key, label) in zip(axes[0], xs):
        for i, g in enumerate(groups):
            pts = [r for r in rows if r["baseline"] == g and r.get(key) is not None]
            ax.scatter([r[key] for r in pts], [r["latency_ms"] for r in pts], color=f"C{i}", label=g)
            for r in pts:
                ax.annotate(r["model"], (r[key], r["latency_ms"]), fontsize=7, xytext=(3, 3),
                            textcoords="offset points")
        ax.set_xlabel(label)
        ax.set_ylabel("latency (ms)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)
    return path


DEPLOY_COLUMNS = [
    Column("model", "model"), Column("variant", "runtime"), Column("latency_ms", "latency (ms)", "{:.1f}"),
    Column("speedup", "× PyTorch", "{:.2f}"), Column("map50", "mAP50", "{:.1f}"),
    Column("map50_95", "mAP50-95", "{:.1f}"), Column("delta_map50_95", "Δ mAP50-95 vs PyTorch", "{:+.2f}"),
    Column("delta_vs_fp32_export", "Δ vs fp32 export", "{:+.2f}"),
]


def report(rows: list[dict], save_dir: Path, setup: str, clock: str = "wall", plots: bool = False,
           deploy_rows: list[dict] | None = None) -> list[dict]:
    """Print and save the table (and, with ``--formats``, the deployment table: every runtime variant of each model)."""
    what = "CPU time" if clock == "cpu" else "latency"
    header = (f"Benchmarks {setup} · {what} = median of interleaved runs of the fused model; × base = ratio to the "
              "group's baseline")
    text = f"{header}\n\n{markdown_table(rows, columns_for(rows))}\n"
    if deploy_rows:
        columns = [c for c in DEPLOY_COLUMNS if any(r.get(c.key) is not None for r in deploy_rows)]
        scored = ("; mAP from val.py on the same exported files, PyTorch scored like them (batch 1, square images)"
                  if any("map50" in r for r in deploy_rows) else "")
        text += (f"\nDeployment · {what} of each runtime, timed in the same interleaved rounds{scored}\n\n"
                 f"{markdown_table(deploy_rows, columns)}\n")
        log(f"benchmarks: saved {write_csv(deploy_rows, save_dir / 'deploy.csv')}")
    log(f"\n{text}")
    (save_dir / "benchmarks.md").write_text(text, encoding="utf-8")
    log(f"benchmarks: saved {write_csv(rows, save_dir / 'benchmarks.csv')}")
    if plots:
        log(f"benchmarks: saved {plot(rows, save_dir / 'benchmarks.png')}")
    return rows
