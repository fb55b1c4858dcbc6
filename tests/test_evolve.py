"""Hyperparameter evolution (train.py --evolve [--ray]): mutation, limits, evolve.csv, continuing, bad flags."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

import train
from tests.helpers import shapes_data
from utils.engine import load_hyp
from utils.evolve import META, NR, EvolveError, append_row, constrain, fitness, mutate, read_csv, search_dir

# A tiny run: 1 epoch of yolov5n at 64 px on 32 images, no dataloader workers.
TINY = ["--imgsz", "64", "--epochs", "1", "--batch-size", "16", "--cfg", "models/yolov5n.yaml", "--workers", "0"]


def train_with_flags(argv: list[str]):
    """train.py's run() with command-line flags (what main() does, minus the error handling)."""
    return train.run(**vars(train.parse_opt(argv)))


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    """The bundled shapes data, generated small."""
    return shapes_data(tmp_path_factory.mktemp("data"), n_train=32, n_val=16, imgsz=64)


def within_limits(hyp: dict[str, float]) -> bool:
    return all(META[k][1] <= v <= META[k][2] for k, v in hyp.items() if k in META)


def test_fitness_is_yolov5s():
    rows = np.array([[0.9, 0.8, 0.5, 0.3, 1, 1, 1], [0.1, 0.1, np.nan, np.nan, 1, 1, 1]])
    assert fitness(rows) == pytest.approx([0.1 * 0.5 + 0.9 * 0.3, 0.0])


def test_mutation_keeps_limits_and_draws_parents_from_the_five_fittest():
    base = constrain(load_hyp("data/hyps/hyp.shapes.yaml"))
    keys = list(base)
    # six rows, fitness rising with the row; iou_t (mutation scale 0) tells which row was the parent
    rows = np.array([[0, 0, 0.1 * i, 0.1 * i, 0, 0, 0, *(base | {"iou_t": round(0.1 * (i + 1), 5)}).values()]
                     for i in range(6)])
    rng = np.random.default_rng(0)
    parents, changed = set(), set()
    for _ in range(300):
        child = mutate(rows, keys, rng)
        assert within_limits(child) and list(child) == keys
        parent = rows[int(round(child["iou_t"] * 10)) - 1, NR:]
        assert list(child.values()) != parent.tolist()  # no duplicate of its parent
        parents.add(child["iou_t"])
        changed |= {k for k, v in zip(keys, parent) if child[k] != v}
        for k in ("fl_gamma", "fliplr", "perspective", "nbs", "degrees", "mixup"):  # held: scale 0, not in META, or 0
            assert child[k] == base[k], k
    assert parents <= {0.3, 0.4, 0.5, 0.6} and 0.6 in parents  # never the worst row; the 5th gets weight ~0
    # every key with a mutation scale moved at some point (zeros stay zero under YOLOv5's multiplicative mutation)
    assert changed == {k for k in keys if META.get(k, (0,))[0] > 0 and base[k] != 0}
    assert constrain({"lr0": 1.0, "hsv_h": -1.0, "anchor_t": 4.123456, "nbs": 1e9}) == {
        "lr0": 0.1, "hsv_h": 0.0, "anchor_t": 4.12346, "nbs": 1e9}


def test_csv_is_yolov5s_layout_and_a_broken_line_is_named(tmp_path):
    f = tmp_path / "evolve.csv"
    append_row(f, ["lr0", "box"], [0.5, 0.4, 0.3, 0.2, 0.01, 0.02, 0.03], {"lr0": 0.01, "box": 0.05})
    append_row(f, ["lr0", "box"], [0.6, 0.5, 0.4, 0.3, 0.01, 0.02, 0.03], {"lr0": 0.012345678, "box": 0.05})
    header = f.read_text().splitlines()[0].split(",")
    assert [c.strip() for c in header][:4] == ["metrics/precision", "metrics/recall", "metrics/mAP_0.5",
                                               "metrics/mAP_0.5:0.95"] and len(header[0]) == 20
    keys, rows = read_csv(f)
    assert keys == ["lr0", "box"] and rows.shape == (2, 9) and rows[1, 7] == pytest.approx(0.012346)
    with open(f, "a") as fh:
        fh.write("   0.1,   0.2,  0.3\n")  # a line cut short by a crash
    with pytest.raises(EvolveError, match=r"evolve.csv:4: expected 9 numbers"):
        read_csv(f)


def test_a_search_continues_only_with_its_own_settings(tmp_path):
    settings = {"overrides": {"epochs": 3, "data": "a.yaml"}, "hyp": {"lr0": 0.01}}
    first = search_dir(tmp_path / "exp", settings)
    other = search_dir(tmp_path / "exp", {**settings, "overrides": {"epochs": 5, "data": "a.yaml"}})
    assert (first.name, other.name) == ("exp", "exp2")
    assert search_dir(tmp_path / "exp", settings) == first  # the same command finds its folder again
    assert search_dir(tmp_path / "exp", {**settings, "overrides": {"epochs": 5, "data": "a.yaml"}}) == other
    with pytest.raises(EvolveError, match=r"exp/search.yaml: this search was started with other settings \(epochs\)"):
        search_dir(tmp_path / "exp", {**settings, "overrides": {"epochs": 5, "data": "a.yaml"}}, exist_ok=True)


@pytest.mark.parametrize("flags, message", [
    (["--evolve", "--resume"], "--evolve cannot be combined with --resume"),
    (["--evolve", "--device", "0,1"], "--evolve is not compatible with multi-GPU DDP training (--device 0,1)"),
    (["--evolve", "0"], "--evolve 0: the number of generations must be at least 1"),
    (["--ray"], "--ray runs a hyperparameter search: use it with --evolve N"),
])
def test_bad_evolve_flags_fail_with_one_line(flags, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        train.main(["--project", str(tmp_path)] + flags)
    assert e.value.code == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not any(tmp_path.iterdir())  # nothing was started


def test_evolve_refuses_a_torchrun_launch(monkeypatch, tmp_path):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(EvolveError, match=r"multi-GPU DDP training \(2 processes\)"):
        train_with_flags(["--evolve", "--project", str(tmp_path)])


def evolved(save_dir: Path) -> tuple[list[str], np.ndarray]:
    keys, rows = read_csv(save_dir / "evolve.csv")
    assert all(within_limits(dict(zip(keys, r[NR:]))) for r in rows)
    assert len({tuple(r[NR:]) for r in rows}) == len(rows)  # every generation trained other hyperparameters
    assert not list(save_dir.rglob("*.pt")) and not (save_dir / "generation").exists()  # no checkpoint kept
    best = yaml.safe_load((save_dir / "hyp_evolve.yaml").read_text())
    assert list(best) == keys and list(best.values()) == rows[np.argmax(fitness(rows)), NR:].tolist()
    assert (save_dir / "evolve.png").stat().st_size > 10_000
    return keys, rows


def test_three_generations_continue_from_the_csv_and_give_a_usable_hyp_file(shapes, tmp_path):
    args = TINY + ["--data", str(shapes), "--project", str(tmp_path)]
    first = train_with_flags(args + ["--evolve", "2"])
    assert first == tmp_path / "exp"
    two = read_csv(first / "evolve.csv")[1]
    again = train_with_flags(args + ["--evolve", "3"])  # the same search, one more generation
    assert again == first
    keys, rows = evolved(first)
    assert len(two) == 2 and len(rows) == 3 and rows[:2].tolist() == two.tolist()
    base = constrain(load_hyp("data/hyps/hyp.shapes.yaml"))  # the demo data's default --hyp
    assert keys == list(base) and rows[0, NR:].tolist() == list(base.values())  # generation 1: the --hyp values
    assert np.isfinite(rows[:, :NR]).all() and (rows[:, 4:NR] > 0).any()  # results of a real validation

    hyp_file = first / "hyp_evolve.yaml"
    trainer = train_with_flags(args + ["--hyp", str(hyp_file), "--noplots", "--name", "check"])
    best = yaml.safe_load(hyp_file.read_text())
    assert trainer.args.lr0 == pytest.approx(best["lr0"]) and trainer.args.mosaic == pytest.approx(best["mosaic"])
    assert trainer.model.hyp["anchor_t"] == pytest.approx(best["anchor_t"])


def test_ray_tune_runs_the_same_search(shapes, tmp_path):
    """Two trials on a local Ray instance, gathered into evolve.csv (needs: pip install -r requirements-ray.txt)."""
    pytest.importorskip("ray.tune")
    pytest.importorskip("optuna")
    save_dir = train_with_flags(TINY + ["--data", str(shapes), "--project", str(tmp_path), "--evolve", "2", "--ray"])
    keys, rows = evolved(save_dir)
    assert len(rows) == 2 and not (save_dir / "ray").exists()
    assert rows[0, NR:].tolist() == list(constrain(load_hyp("data/hyps/hyp.shapes.yaml")).values())
