"""YOLOv5's ``results.csv``, ``results.png`` and TensorBoard scalars for our trainers.

The engine writes its own column names (``metrics/mAP50(B)``, ``lr/pg0``); YOLOv5 users' scripts read YOLOv5's
(``metrics/mAP_0.5``, ``x/lr0``). ``ResultsLog`` is a trainer mixin that writes one row per epoch under YOLOv5's names,
in YOLOv5's layout (every field right-aligned to a fixed width, so scripts strip the names after ``pd.read_csv``;
``epoch`` counted from 0), logs the same names to TensorBoard in the run folder, and draws ``results.png`` from the
csv. The trainer's ``metrics`` dict keeps the engine's names (the validators, ``--evolve`` and benchmarks read those).

Each table below maps a YOLOv5 column to where its value comes from: a key of the engine's metrics dict, or
``lr:<group>``, the learning rate of the optimizer's parameter group of that name (the engine names its groups
``weight``, ``bn`` and ``bias``; YOLOv5 v6.0's ``x/lr0``..``x/lr2`` are BatchNorm weights, other weights, biases).
"""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path

from ultralytics.utils import LOGGER, RANK

DETECT_COLUMNS: tuple[tuple[str, str], ...] = (
    ("train/box_loss", "train/box_loss"),
    ("train/obj_loss", "train/obj_loss"),
    ("train/cls_loss", "train/cls_loss"),
    ("metrics/precision", "metrics/precision(B)"),
    ("metrics/recall", "metrics/recall(B)"),
    ("metrics/mAP_0.5", "metrics/mAP50(B)"),
    ("metrics/mAP_0.5:0.95", "metrics/mAP50-95(B)"),
    ("val/box_loss", "val/box_loss"),
    ("val/obj_loss", "val/obj_loss"),
    ("val/cls_loss", "val/cls_loss"),
    ("x/lr0", "lr:bn"),
    ("x/lr1", "lr:weight"),
    ("x/lr2", "lr:bias"),
)
# YOLOv5's classify/train.py: one learning rate, that of the optimizer's first group (the biases)
CLASSIFY_COLUMNS: tuple[tuple[str, str], ...] = (
    ("train/loss", "train/loss"),
    ("val/loss", "val/loss"),
    ("metrics/accuracy_top1", "metrics/accuracy_top1"),
    ("metrics/accuracy_top5", "metrics/accuracy_top5"),
    ("lr/0", "lr:bias"),
)
# results.png: YOLOv5's ten panels (losses and P/R on top, validation losses and mAPs below)
DETECT_PANELS = ("train/box_loss", "train/obj_loss", "train/cls_loss", "metrics/precision", "metrics/recall",
                 "val/box_loss", "val/obj_loss", "val/cls_loss", "metrics/mAP_0.5", "metrics/mAP_0.5:0.95")
CLASSIFY_PANELS = ("train/loss", "val/loss", "metrics/accuracy_top1", "metrics/accuracy_top5", "lr/0")


def header_line(names: list[str], width: int) -> str:
    return ",".join(f"{n:>{width}s}" for n in ["epoch", *names]) + "\n"


def row_line(epoch: int, values: list[float], width: int) -> str:
    return ",".join([f"{int(epoch):>{width}d}", *(f"{v:{width}.5g}" for v in values)]) + "\n"


def read_results(file: str | Path) -> dict[str, list[float]]:
    """Columns of a results.csv (names stripped of their padding) as lists of floats; {} if the file is unreadable."""
    try:
        with open(file, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
    except OSError:
        return {}
    if not rows:
        return {}
    names = [n.strip() for n in rows[0]]
    out: dict[str, list[float]] = {n: [] for n in names}
    for row in rows[1:]:
        for n, v in zip(names, row):
            try:
                out[n].append(float(v))
            except ValueError:
                out[n].append(float("nan"))
    return out


def read_rows(file: str | Path) -> list[dict[str, float]]:
    """The same file as one dict per epoch; a last row cut short (a killed run) is left out."""
    columns = read_results(file)
    n = min(map(len, columns.values()), default=0)
    return [{name: values[i] for name, values in columns.items()} for i in range(n)]


def plot_results(file: str | Path, panels: tuple[str, ...] = DETECT_PANELS) -> Path | None:
    """Draw ``results.png`` next to ``file``: one panel per column in ``panels`` (two rows of five), each with the
    epoch values and a smoothed line. Returns the image's path, or None when the csv has no rows."""
    data = read_results(file)
    epochs = data.get("epoch", [])
    if not epochs:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = 5
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(12, 3 * rows), tight_layout=True, squeeze=False)
    for ax, name in zip(axes.ravel(), panels):
        y = data.get(name, [])
        ax.plot(epochs[:len(y)], y, marker=".", linewidth=2, markersize=8, label="results")
        if len(y) > 2:
            ax.plot(epochs[:len(y)], _smooth(y), ":", linewidth=2, label="smooth")
        ax.set_title(name, fontsize=12)
    for ax in axes.ravel()[len(panels):]:
        ax.axis("off")
    axes[0, 0].legend()
    out = Path(file).with_name("results.png")
    fig.savefig(out, dpi=200)
    plt.close(fig)
    return out


def _smooth(y: list[float], f: float = 0.05) -> list[float]:
    """Box-filter smoothing over about a fraction ``f`` of the points (at least 3), edges padded by repetition."""
    k = max(3, round(len(y) * f) // 2 * 2 + 1)
    h = k // 2
    padded = [y[0]] * h + list(y) + [y[-1]] * h
    return [sum(padded[i:i + k]) / k for i in range(len(y))]


class ResultsLog:
    """Trainer mixin: YOLOv5's results.csv, results.png and TensorBoard scalars (see the module docstring).

    Put it first among the trainer's bases; set ``results_columns``/``results_panels``/``results_width`` for another
    task, ``tensorboard = False`` to write no events (the evolution's trainings).
    """

    results_columns = DETECT_COLUMNS
    results_panels = DETECT_PANELS
    results_width = 20  # YOLOv5's detection csv: %20s / %20.5g (its classifier's: 23)
    tensorboard = True
    ndjson_console = False  # train.py --ndjson-console: each epoch's row as one JSON line in the log
    ndjson_file = False  # train.py --ndjson-file: ... appended to results.ndjson in the run folder

    def __init__(self, *args, **kwargs):
        # The engine's own TensorBoard callback logs the engine's names into the same folder: ours replaces it.
        from ultralytics.utils import SETTINGS

        saved = SETTINGS.get("tensorboard")
        dict.__setitem__(SETTINGS, "tensorboard", False)  # in memory, for this constructor only
        try:
            super().__init__(*args, **kwargs)
        finally:
            dict.__setitem__(SETTINGS, "tensorboard", saved)

    def results_row(self, metrics: dict) -> dict[str, float]:
        """This epoch's values under YOLOv5's names, in YOLOv5's order (NaN for a value the engine did not give)."""
        groups = {g.get("param_group"): g["lr"] for g in getattr(self.optimizer, "param_groups", [])}
        row = {}
        for name, source in self.results_columns:
            v = groups.get(source[3:]) if source.startswith("lr:") else metrics.get(source)
            row[name] = float(v) if v is not None else float("nan")
        return row

    def save_metrics(self, metrics):
        """Append this epoch to results.csv in YOLOv5's format and log it to TensorBoard (the engine calls this on
        rank 0 only)."""
        row = self.results_row(metrics)
        names = list(row)
        self.csv.parent.mkdir(parents=True, exist_ok=True)
        head = ""
        if self.csv.exists():
            old = list(read_results(self.csv))
            if old != ["epoch", *names]:  # a run begun before this layout (the engine's names): keep it aside
                aside = self.csv.with_name("results.engine.csv")
                os.replace(self.csv, aside)
                LOGGER.warning(f"{self.csv} had other columns; moved to {aside.name}, new rows start a YOLOv5 csv")
        if not self.csv.exists():
            head = header_line(names, self.results_width)
        with open(self.csv, "a", encoding="utf-8") as f:
            f.write(head + row_line(self.epoch, list(row.values()), self.results_width))
        self._log_tensorboard(row)
        self._log_ndjson(row)

    def _log_ndjson(self, row: dict[str, float]) -> None:
        """YOLOv5's NDJSON logging: the epoch and its row, one JSON object a line (NaN as null)."""
        if not (self.ndjson_console or self.ndjson_file):
            return
        import json
        import math

        line = json.dumps({"epoch": self.epoch, **{k: None if math.isnan(v) else v for k, v in row.items()}})
        if self.ndjson_console:
            LOGGER.info(line)
        if self.ndjson_file:
            with open(self.csv.with_name("results.ndjson"), "a", encoding="utf-8") as f:
                f.write(line + "\n")

    def read_results_csv(self):
        """results.csv as {stripped name: values} (the engine stores it in checkpoints as ``train_results``)."""
        return read_results(self.csv)

    def plot_metrics(self):
        plot_results(self.csv, self.results_panels)

    # ----- TensorBoard ---------------------------------------------------------------------------------------------
    def _log_tensorboard(self, row: dict[str, float]) -> None:
        if not self.tensorboard or RANK not in {-1, 0}:
            return
        writer = getattr(self, "_tb_writer", None)
        if writer is None:
            writer = self._tb_writer = open_summary_writer(self.save_dir)
            if writer is None:
                self.tensorboard = False
                return
            self.add_callback("on_train_end", close_summary_writer)
        for k, v in row.items():
            writer.add_scalar(k, v, self.epoch)
        writer.flush()


def open_summary_writer(save_dir: str | Path):
    """A TensorBoard SummaryWriter on ``save_dir``, or None (with one warning) when tensorboard is not installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        LOGGER.warning("TensorBoard: not installed, no events written (pip install tensorboard)")
        return None
    LOGGER.info(f"TensorBoard: start with 'tensorboard --logdir {Path(save_dir).parent}', view at "
                f"http://localhost:6006/")
    return SummaryWriter(str(save_dir))


def close_summary_writer(trainer) -> None:
    writer = getattr(trainer, "_tb_writer", None)
    if writer is not None:
        writer.close()
        trainer._tb_writer = None
