"""Engine defaults we change: offline (no telemetry, no hub look-ups, plot fonts from installed packages; the network
is blocked here) and every core for inference."""

from pathlib import Path

import numpy as np

import models.yolo  # noqa: F401  (imports the engine the way the CLIs do)


def test_engine_is_offline_and_silent():
    import ultralytics.utils as u

    assert u.ONLINE is False and u.is_online() is False
    assert u.SETTINGS["sync"] is False


def test_fonts_come_from_installed_packages(tmp_path):
    from ultralytics.utils import checks, plotting

    for name in ("Arial.ttf", "Arial.Unicode.ttf"):
        font = checks.check_font(name)
        assert font is not None and Path(font).is_file()
    assert plotting.check_font is checks.check_font


def test_plots_with_non_ascii_class_names(tmp_path):
    from ultralytics.utils.plotting import Annotator, plot_labels

    names = {0: "Fußgänger", 1: "自行车", 2: "voiture"}
    rng = np.random.default_rng(0)
    boxes = np.column_stack((rng.uniform(0.2, 0.8, (30, 2)), rng.uniform(0.05, 0.3, (30, 2))))
    plot_labels(boxes, rng.integers(0, 3, 30), names=names, save_dir=tmp_path)
    assert (tmp_path / "labels.jpg").stat().st_size > 0
    ann = Annotator(np.zeros((64, 64, 3), np.uint8), example=str(names))
    ann.box_label([4, 4, 40, 40], "Fußgänger 0.9")
    assert ann.result().any()


def test_inference_keeps_every_core(monkeypatch):
    """The engine's select_device leaves a core to data loaders; val.py/detect.py inference must not lose it."""
    import torch
    from ultralytics.utils.torch_utils import select_device

    from utils import engine

    n = torch.get_num_threads()
    monkeypatch.setattr(engine, "TORCH_THREADS", 3)
    monkeypatch.setattr(engine.torch_utils, "NUM_THREADS", 1)
    try:
        with engine.all_cores():
            select_device("cpu", verbose=False)
            assert torch.get_num_threads() == 3
        assert engine.torch_utils.NUM_THREADS == 1  # outside the block: the engine's choice
        select_device("cpu", verbose=False)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(n)
