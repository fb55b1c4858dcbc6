"""Hyperparameter evolution: YOLOv5's ``train.py --evolve``, on this machine or on Ray Tune (``--ray``).

A search trains the model many times with other hyperparameters, each training validated at its final epoch only
and keeping no checkpoint, and records each as one row of ``evolve.csv`` in YOLOv5's format: seven results
(precision, recall, mAP@.5, mAP@.5:.95, validation box/obj/cls loss), then the hyperparameters in the order of the
``--hyp`` file. Fitness is YOLOv5's, 0.1 mAP@.5 + 0.9 mAP@.5:.95. After every row the best set is written to
``hyp_evolve.yaml``, a file ``train.py --hyp`` accepts; ``evolve.png`` plots each hyperparameter against fitness.

- Locally, generation 1 trains the ``--hyp`` values (clipped to ``META``'s limits) and every later one mutates a
  parent drawn from the five fittest rows, with weights fitness - min: each value with a mutation scale is multiplied,
  with probability 0.8, by ``1 + scale * N(0, 1) * U(0, 1) * 0.2`` (one U(0, 1) per generation), the factor clipped
  to [0.3, 3], the result clipped to the key's limits and rounded to 5 decimals (YOLOv5 v7.0's scheme and table).
- ``--ray`` runs the trials through the engine's Ray Tune runner (``ultralytics.utils.tuner.run_ray_tune``), one
  training per trial, with Optuna's TPE sampling uniformly within the same limits, started from the rows already in
  ``evolve.csv`` (or from the ``--hyp`` values); the driver appends the finished trials to the same csv.

``--evolve N`` means N generations in all: running the same command again continues the search in its folder (the
latest ``runs/evolve/exp*`` whose ``search.yaml`` holds the same settings) until its csv has N rows.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np  # noqa: E402
import yaml  # noqa: E402
from ultralytics.utils import LOGGER, colorstr  # noqa: E402

from utils import offline  # noqa: F401  (must precede the engine import)
from utils.engine import ROOT, YOLOv5Trainer, all_cores, increment_dir  # noqa: E402
from utils.rundir import lock_run_dir, release_run_dir  # noqa: E402

PREFIX = colorstr("evolve: ")

# YOLOv5 v7.0's evolution table, key: (mutation scale 0-1, lower limit, upper limit). Keys with scale 0 keep their
# value (clipped to the limits); keys absent here (nbs, label_smoothing) are never changed. YOLOv5's 'anchors' (anchors
# per level) is left out: our anchors come from the model YAML.
META: dict[str, tuple[float, float, float]] = {
    "lr0": (1, 1e-5, 1e-1),  # initial learning rate (SGD 1e-2, Adam 1e-3)
    "lrf": (1, 0.01, 1.0),  # final learning rate (lr0 * lrf)
    "momentum": (0.3, 0.6, 0.98),  # SGD momentum / Adam beta1
    "weight_decay": (1, 0.0, 0.001),
    "warmup_epochs": (1, 0.0, 5.0),
    "warmup_momentum": (1, 0.0, 0.95),
    "warmup_bias_lr": (1, 0.0, 0.2),
    "box": (1, 0.02, 0.2),  # box loss gain
    "cls": (1, 0.2, 4.0),  # cls loss gain
    "cls_pw": (1, 0.5, 2.0),  # cls BCE positive weight
    "obj": (1, 0.2, 4.0),  # obj loss gain (scaled with pixels)
    "obj_pw": (1, 0.5, 2.0),  # obj BCE positive weight
    "iou_t": (0, 0.1, 0.7),  # IoU training threshold
    "anchor_t": (1, 2.0, 8.0),  # anchor-multiple threshold
    "fl_gamma": (0, 0.0, 2.0),  # focal loss gamma
    "hsv_h": (1, 0.0, 0.1),
    "hsv_s": (1, 0.0, 0.9),
    "hsv_v": (1, 0.0, 0.9),
    "degrees": (1, 0.0, 45.0),
    "translate": (1, 0.0, 0.9),
    "scale": (1, 0.0, 0.9),
    "shear": (1, 0.0, 10.0),
    "perspective": (0, 0.0, 0.001),
    "flipud": (1, 0.0, 1.0),
    "fliplr": (0, 0.0, 1.0),
    "mosaic": (1, 0.0, 1.0),
    "mixup": (1, 0.0, 1.0),
    "copy_paste": (1, 0.0, 1.0),
}
# The result columns of evolve.csv (YOLOv5's names) and the trainer's metrics they come from.
RESULT_KEYS = ("metrics/precision", "metrics/recall", "metrics/mAP_0.5", "metrics/mAP_0.5:0.95",
               "val/box_loss", "val/obj_loss", "val/cls_loss")
ENGINE_RESULT_KEYS = ("metrics/precision(B)", "metrics/recall(B)", "metrics/mAP50(B)", "metrics/mAP50-95(B)",
                      "val/box_loss", "val/obj_loss", "val/cls_loss")
NR = len(RESULT_KEYS)
# Settings that do not change what a training measures: a search may continue with other values.
NOT_SEARCH_SETTINGS = ("save_dir", "device", "workers", "cache")


class EvolveError(ValueError):
    """A search that cannot start or continue; the message names the flag or file and what to do."""


def fitness(rows: np.ndarray) -> np.ndarray:
    """YOLOv5's fitness of each row (results first): 0.1 mAP@.5 + 0.9 mAP@.5:.95 (0 for a diverged training)."""
    return np.nan_to_num(0.1 * rows[:, 2] + 0.9 * rows[:, 3])


def constrain(hyp: dict[str, float]) -> dict[str, float]:
    """``hyp`` with every ``META`` key clipped to its limits and rounded to 5 decimals (other keys as they are)."""
    out = dict(hyp)
    for k, v in hyp.items():
        if k in META:
            out[k] = round(min(max(float(v), META[k][1]), META[k][2]), 5)
    return out


def mutate(rows: np.ndarray, keys: list[str], rng: np.random.Generator, top: int = 5, prob: float = 0.8,
           sigma: float = 0.2) -> dict[str, float]:
    """A new hyperparameter set: a parent from the ``top`` fittest rows, mutated as described in the module docstring.

    Tries again until the (clipped, rounded) child differs from its parent.
    """
    best = np.argsort(-fitness(rows))[:top]
    w = fitness(rows[best]) - fitness(rows[best]).min() + 1e-6
    parent = rows[rng.choice(best, p=w / w.sum()), NR:]
    gains = np.array([META[k][0] if k in META else 0.0 for k in keys])
    n = len(keys)
    for _ in range(1000):
        factor = np.ones(n)
        while np.all(factor == 1):
            factor = (gains * (rng.random(n) < prob) * rng.standard_normal(n) * rng.random() * sigma + 1).clip(0.3, 3)
        child = constrain(dict(zip(keys, (parent * factor).tolist())))
        if list(child.values()) != parent.tolist():
            return child
    raise EvolveError("no hyperparameter can change: every one with a mutation scale is 0 or held at its limit")


# ---------------------------------------------------------------------------------------------------------------------
# evolve.csv, hyp_evolve.yaml, evolve.png
# ---------------------------------------------------------------------------------------------------------------------
def read_csv(file: Path) -> tuple[list[str], np.ndarray]:
    """Hyperparameter names and the rows (results, then hyperparameters) of an ``evolve.csv``."""
    lines = [line for line in file.read_text().splitlines() if line.strip()]
    if not lines:
        return [], np.zeros((0, NR))
    header = [c.strip() for c in lines[0].split(",")]
    if tuple(header[:NR]) != RESULT_KEYS:
        raise EvolveError(f"{file}: line 1 must start with the columns {', '.join(RESULT_KEYS)}")
    rows = []
    for i, line in enumerate(lines[1:], 2):
        try:
            row = [float(v) for v in line.split(",")]
        except ValueError:
            row = []
        if len(row) != len(header):
            raise EvolveError(f"{file}:{i}: expected {len(header)} numbers; fix or delete this line to continue")
        rows.append(row)
    return header[NR:], np.array(rows, dtype=float).reshape(-1, len(header))


def append_row(file: Path, keys: list[str], results: list[float], hyp: dict[str, float]) -> None:
    """Add one training to ``evolve.csv`` (YOLOv5's layout: 20-character columns, 5 significant digits)."""
    values = [*results, *(hyp[k] for k in keys)]
    text = "" if file.exists() and file.stat().st_size else ",".join(f"{k:>20s}" for k in (*RESULT_KEYS, *keys)) + "\n"
    with open(file, "a", encoding="utf-8") as f:
        f.write(text + ",".join(f"{v:20.5g}" for v in values) + "\n")


def write_best(save_dir: Path, keys: list[str], rows: np.ndarray) -> Path:
    """Write the fittest row's hyperparameters to ``hyp_evolve.yaml`` (replaced atomically); return its path."""
    i = int(np.argmax(fitness(rows)))
    file = save_dir / "hyp_evolve.yaml"
    head = (f"# Hyperparameter evolution: best of {len(rows)} generations in {save_dir / 'evolve.csv'}\n"
            f"# generation {i + 1}, fitness {fitness(rows)[i]:.5g} (0.1 mAP@.5 + 0.9 mAP@.5:.95)\n"
            f"# {', '.join(RESULT_KEYS)}\n# {', '.join(f'{v:.5g}' for v in rows[i, :NR])}\n"
            f"# Usage: python train.py --hyp {file}\n\n")
    tmp = file.with_name(file.name + ".tmp")
    tmp.write_text(head + yaml.safe_dump({k: float(v) for k, v in zip(keys, rows[i, NR:])}, sort_keys=False))
    os.replace(tmp, file)
    return file


def plot_evolve(csv: Path) -> Path:
    """``evolve.png`` next to ``csv``: fitness against each hyperparameter, coloured by generation, best marked +."""
    from matplotlib.figure import Figure

    keys, rows = read_csv(csv)
    fit = fitness(rows)
    best = int(np.argmax(fit))
    cols = 5
    fig = Figure(figsize=(12, 2.4 * math.ceil(len(keys) / cols)), layout="tight")
    for j, k in enumerate(keys):
        ax = fig.add_subplot(math.ceil(len(keys) / cols), cols, j + 1)
        ax.scatter(rows[:, NR + j], fit, c=np.arange(len(rows)), cmap="viridis", s=12, alpha=0.8, edgecolors="none")
        ax.plot(rows[best, NR + j], fit[best], "k+", markersize=15)
        ax.set_title(f"{k} = {rows[best, NR + j]:.3g}", fontsize=9)
        ax.tick_params(labelsize=7)
        ax.locator_params(axis="x", nbins=3)
        if j % cols:
            ax.set_yticklabels([])
        else:
            ax.set_ylabel("fitness", fontsize=8)
    out = csv.with_name("evolve.png")
    fig.savefig(out, dpi=150)
    return out


# ---------------------------------------------------------------------------------------------------------------------
# One training
# ---------------------------------------------------------------------------------------------------------------------
class EvolveTrainer(YOLOv5Trainer):
    """The training of one generation: validated at the final epoch only (``val=False``), never checkpointed, and
    with no TensorBoard events (as in YOLOv5; its folder is deleted after)."""

    tensorboard = False

    def save_model(self) -> bool:
        return False


def train_generation(setup: dict, hyp: dict[str, float], save_dir: Path, device: str | None = None) -> list[float]:
    """Train once with ``hyp`` (over ``setup['hyp']``) in a scratch ``save_dir``, deleted after; the seven results."""
    shutil.rmtree(save_dir, ignore_errors=True)
    overrides = {**setup["overrides"], "save_dir": str(save_dir), "val": False, "save": False, "plots": False}
    if device is not None:
        overrides["device"] = device
    with all_cores():
        trainer = EvolveTrainer(overrides=overrides, hyp={**setup["hyp"], **hyp}, weights=setup.get("weights"),
                                autoanchor=setup.get("autoanchor", True))
        for callbacks in trainer.callbacks.values():  # the engine's Ray Tune reporter: see RayTrial
            callbacks[:] = [c for c in callbacks if not c.__module__.endswith("callbacks.raytune")]
        trainer.train()
    shutil.rmtree(save_dir, ignore_errors=True)
    return [float(trainer.metrics[k]) for k in ENGINE_RESULT_KEYS]


# ---------------------------------------------------------------------------------------------------------------------
# The search
# ---------------------------------------------------------------------------------------------------------------------
def check_evolve_opt(opt: argparse.Namespace) -> None:
    """Refuse flag combinations YOLOv5 refuses with --evolve; the default project becomes runs/evolve."""
    if opt.evolve is None:
        raise EvolveError("--ray runs a hyperparameter search: use it with --evolve N")
    if opt.evolve < 1:
        raise EvolveError(f"--evolve {opt.evolve}: the number of generations must be at least 1")
    if opt.resume:
        raise EvolveError("--evolve cannot be combined with --resume: run the same --evolve command again to continue "
                          "the search from its evolve.csv")
    devices = [d.strip() for d in str(opt.device).lower().replace("cuda:", "").split(",") if d.strip()]
    world = int(os.environ.get("WORLD_SIZE", 1))
    if len(devices) > 1 or world > 1:
        how = f"--device {opt.device}" if len(devices) > 1 else f"{world} processes"
        raise EvolveError(f"--evolve is not compatible with multi-GPU DDP training ({how}): evolve on one device "
                          f"(--device {devices[0] if devices else 0}), or train several at once with --ray")
    if opt.ray:
        try:
            import optuna  # noqa: F401
            import ray.tune
        except ImportError as e:
            raise EvolveError(f"--ray needs Ray Tune and Optuna ({e}): pip install -r requirements-ray.txt") from None
        from ultralytics.utils.checks import check_version

        if not check_version(ray.__version__, ">=2.41.0"):  # else the engine's runner would try to install it
            raise EvolveError(f"--ray needs Ray >= 2.41 (found {ray.__version__}): pip install -r requirements-ray.txt")
    if Path(opt.project).resolve() == (ROOT / "runs" / "train").resolve():
        opt.project = str(ROOT / "runs" / "evolve")


def search_settings(setup: dict) -> dict[str, Any]:
    """What a search measures: continuing it needs the same (engine arguments, hyperparameter file, weights...)."""
    overrides = {k: v for k, v in setup["overrides"].items() if k not in NOT_SEARCH_SETTINGS}
    return {"overrides": overrides, "hyp": dict(setup["hyp"]), "weights": setup.get("weights"),
            "autoanchor": setup.get("autoanchor", True)}


def search_dir(base: Path, settings: dict, exist_ok: bool = False) -> Path:
    """The folder of the search: the newest of ``base``, ``base2``… holding the same settings, else a new one.

    With ``exist_ok`` it is ``base`` itself, which must then be new or hold the same settings.
    """
    found = [p for p in base.parent.glob(f"{base.name}*") if re.fullmatch(re.escape(base.name) + r"\d*", p.name)]
    for d in [base] if exist_ok else sorted(found, key=lambda p: int(p.name[len(base.name):] or 1), reverse=True):
        file = d / "search.yaml"
        if file.is_file():
            saved = yaml.safe_load(file.read_text())
            if saved == settings:  # continue it, unless a search that is still running holds it
                lock_run_dir(d, what="--evolve", hint="that search is still running; wait for it to end, or start "
                             "another with a new --name")
                return d
            if exist_ok:
                differ = sorted({k for part in settings for k in _differences(saved.get(part), settings[part], part)})
                raise EvolveError(f"{file}: this search was started with other settings ({', '.join(differ)}); "
                                  "continue it with its own flags, or start another with a new --name")
    d = increment_dir(base, exist_ok)  # created and locked (utils/rundir.py)
    (d / "search.yaml").write_text(yaml.safe_dump(settings, sort_keys=False))
    return d


def _differences(a: Any, b: Any, name: str) -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        return [k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    return [] if a == b else [name]


def evolve(opt: argparse.Namespace, setup: dict, rng: np.random.Generator | None = None) -> Path:
    """Run (or continue) a search of ``opt.evolve`` generations; return its folder.

    ``setup``: the ``YOLOv5Trainer`` arguments of one training (``overrides``, ``hyp``, ``weights``, ``autoanchor``),
    as train.py builds them; ``rng`` draws the mutations (fresh entropy by default).
    """
    save_dir = search_dir(Path(opt.project) / opt.name, search_settings(setup), opt.exist_ok)
    try:
        return _evolve(opt, setup, save_dir, rng)
    finally:
        release_run_dir(save_dir)


def _evolve(opt: argparse.Namespace, setup: dict, save_dir: Path, rng: np.random.Generator | None) -> Path:
    csv = save_dir / "evolve.csv"
    base = {k: v for k, v in setup["hyp"].items() if k != "label_smoothing"}  # label_smoothing is a flag
    keys, rows = read_csv(csv) if csv.exists() else ([], None)
    if not keys:  # a new search
        keys, rows = list(base), np.zeros((0, NR + len(base)))
    if set(keys) != set(base):
        raise EvolveError(f"{csv}: its hyperparameters ({', '.join(keys)}) are not those of the --hyp file "
                          f"({', '.join(base)}); start another search with a new --name")
    LOGGER.info(f"{PREFIX}{len(rows)}/{opt.evolve} generations in {csv}" + (" (Ray Tune)" if opt.ray else ""))
    if opt.ray:
        ray_evolve(opt, setup, keys, rows, save_dir)
    else:
        rng = rng or np.random.default_rng()
        for g in range(len(rows), opt.evolve):
            hyp = mutate(rows, keys, rng) if len(rows) else constrain({k: base[k] for k in keys})
            LOGGER.info(f"{PREFIX}generation {g + 1}/{opt.evolve}: {', '.join(f'{k}={v:g}' for k, v in hyp.items())}")
            append_row(csv, keys, train_generation(setup, hyp, save_dir / "generation"), hyp)
            rows = read_csv(csv)[1]
            write_best(save_dir, keys, rows)
    rows = read_csv(csv)[1] if csv.exists() else rows
    if not len(rows):
        raise EvolveError(f"{save_dir}: no generation finished, nothing to report")
    best_file = write_best(save_dir, keys, rows)
    plot_evolve(csv)
    fit = fitness(rows)
    LOGGER.info(f"{PREFIX}{len(rows)} generations in {colorstr('bold', save_dir)}: best fitness {fit.max():.5g} "
                f"(generation {int(np.argmax(fit)) + 1})\nUsage example: python train.py --hyp {best_file}")
    return save_dir


# ---------------------------------------------------------------------------------------------------------------------
# Ray Tune
# ---------------------------------------------------------------------------------------------------------------------
class RayTrial:
    """The model the engine's ``run_ray_tune`` puts in Ray's object store: one trial = one ``EvolveTrainer`` training.

    ``run_ray_tune`` calls ``train(**config)`` with the sampled hyperparameters next to the engine arguments. The
    engine's own trainer would reject YOLOv5's loss keys (obj, obj_pw, anchor_t, fl_gamma) and read box, cls and cls_pw
    as its own, differently scaled gains; here every hyperparameter goes to our loss and augmentation as in a local
    generation. The engine's per-epoch Ray Tune reporter is removed: only the final epoch is validated, so the trial
    reports once, at its end, with YOLOv5's fitness (the searcher's metric).
    """

    task = "detect"

    def __init__(self, setup: dict, keys: list[str]):
        self.setup = {k: v for k, v in setup.items() if k != "overrides"}  # engine arguments arrive in ``config``,
        self.cfg = str(Path(setup["overrides"]["model"]).resolve())  # but the model YAML ('model' is the runner's)
        if self.setup.get("weights") and Path(self.setup["weights"]).is_file():  # trials may run in another folder
            self.setup["weights"] = str(Path(self.setup["weights"]).resolve())
        self.keys = keys

    def reset_callbacks(self) -> None:
        """Nothing to reset: every trial builds a new trainer."""

    def train(self, **config: Any) -> None:
        import ray
        from ray import tune

        hyp = constrain({k: config.pop(k) if k in config else self.setup["hyp"][k] for k in self.keys})
        save_dir = Path(config["save_dir"]) / config.pop("name")
        results = train_generation({**self.setup, "overrides": {**config, "model": self.cfg}}, hyp, save_dir,
                                   device="0" if ray.get_gpu_ids() else "cpu")
        tune.report({**dict(zip(ENGINE_RESULT_KEYS, results)), "fitness": float(fitness(np.array([results]))[0]),
                     "epoch": config["epochs"]})


def ray_evolve(opt: argparse.Namespace, setup: dict, keys: list[str], rows: np.ndarray, save_dir: Path) -> None:
    """Run the trials that ``evolve.csv`` still lacks on Ray Tune and append them to it.

    An interrupted Ray search (``save_dir/ray``) is restored by the engine's runner and finished first.
    """
    import ray
    from optuna.samplers import TPESampler
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch
    from ultralytics.utils.tuner import run_ray_tune

    tune_dir = save_dir / "ray"
    restoring = tune.Tuner.can_restore(tune_dir)
    todo = opt.evolve - len(rows)
    if todo <= 0 and not restoring:
        return
    free = [k for k in keys if META.get(k, (0,))[0] > 0]
    space = {k: tune.uniform(META[k][1], META[k][2]) for k in free}
    if len(rows):  # the search so far, as already evaluated points
        points = [{k: float(r[NR + keys.index(k)]) for k in free} for r in rows]
        rewards = fitness(rows).tolist()
    else:  # start from the --hyp values, as a local search does
        base = constrain(setup["hyp"])
        points, rewards = [{k: base[k] for k in free}], None
    searcher = OptunaSearch(sampler=TPESampler(multivariate=True, constant_liar=True),  # the engine's choice
                            metric="fitness", mode="max", points_to_evaluate=points, evaluated_rewards=rewards)
    ray.init(ignore_reinit_error=True)  # a cluster at RAY_ADDRESS or started with `ray start`, else a local one
    gpus = 0 if str(opt.device).lower() == "cpu" or not ray.cluster_resources().get("GPU") else 1
    overrides = {**{k: v for k, v in setup["overrides"].items() if k not in ("save_dir", "model")},
                 "save_dir": str(tune_dir), "name": "trial"}
    LOGGER.info(f"{PREFIX}Ray Tune in {tune_dir}: " + ("finishing the interrupted search" if restoring else
                f"{todo} trial(s) of {gpus} GPU each, searching {', '.join(free)}"))
    grid = run_ray_tune(RayTrial(setup, keys), space=space, grace_period=overrides["epochs"], gpu_per_trial=gpus,
                        iterations=max(todo, 1), search_alg=searcher, **overrides)
    csv = save_dir / "evolve.csv"
    for result in grid:
        if result.error or "fitness" not in (result.metrics or {}):
            LOGGER.warning(f"{PREFIX}{result.path}: the trial did not finish, not recorded"
                           + (f" ({result.error})" if result.error else ""))
            continue
        hyp = constrain({k: result.config[k] if k in free else setup["hyp"][k] for k in keys})
        append_row(csv, keys, [float(result.metrics[k]) for k in ENGINE_RESULT_KEYS], hyp)
    shutil.rmtree(tune_dir, ignore_errors=True)  # recorded: the next run starts a new Ray search from the csv
