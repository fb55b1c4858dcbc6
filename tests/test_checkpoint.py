"""Checkpoints: ours and files in the original YOLOv5 format load safely; weights transfer across shifted layers."""

from __future__ import annotations

import sys
import types
import zipfile
from copy import deepcopy
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from models.yolo import Model
from tests.helpers import build
from utils.checkpoint import CheckpointError, load_checkpoint, load_model, transfer_weights

ROOT = Path(__file__).resolve().parents[1]
NAMES = [f"thing{i}" for i in range(80)]


# ----------------------------------------------------------------------------------------------------
# A file in the original YOLOv5 format: throw-away classes living in fake `models.yolo` / `models.common`
# ----------------------------------------------------------------------------------------------------


def _fake_modules(model_class_name: str) -> dict[str, types.ModuleType]:
    """Fake original modules with plain nn.Module classes (no forward): only the attribute layout matters."""
    common, yolo = types.ModuleType("models.common"), types.ModuleType("models.yolo")
    for mod, names in ((common, ("Conv", "C3", "Bottleneck", "SPPF", "Concat")), (yolo, ("Detect", model_class_name))):
        for name in names:
            setattr(mod, name, type(name, (nn.Module,), {"__module__": mod.__name__, "__qualname__": name}))
    utils_general = types.ModuleType("utils.general")  # an unrelated object the original code may pickle
    utils_general.Profile = type("Profile", (), {"__module__": "utils.general", "__qualname__": "Profile"})
    return {"models.common": common, "models.yolo": yolo, "utils.general": utils_general}


def _to_original(layer: nn.Module, fake: dict) -> nn.Module:
    """The original YOLOv5 object layout for one of our layers, weights copied."""
    c, y = fake["models.common"], fake["models.yolo"]
    kind = type(layer).__name__
    if kind == "Conv":
        o = c.Conv()
        o.conv, o.bn, o.act = deepcopy(layer.conv), deepcopy(layer.bn), nn.SiLU()
    elif kind == "Bottleneck":
        o = c.Bottleneck()
        o.cv1, o.cv2, o.add = _to_original(layer.cv1, fake), _to_original(layer.cv2, fake), layer.add
    elif kind == "C3":
        o = c.C3()
        o.cv1, o.cv2, o.cv3 = (_to_original(getattr(layer, k), fake) for k in ("cv1", "cv2", "cv3"))
        o.m = nn.Sequential(*(_to_original(b, fake) for b in layer.m))
    elif kind == "SPPF":
        o = c.SPPF()
        o.cv1, o.cv2, o.m = _to_original(layer.cv1, fake), _to_original(layer.cv2, fake), nn.MaxPool2d(5, 1, 2)
    elif kind == "Concat":
        o = c.Concat()
        o.d = layer.d
    elif kind == "Detect":
        o = y.Detect()
        o.nc, o.no, o.nl, o.na, o.inplace = layer.nc, layer.no, layer.nl, layer.na, True
        o.grid = [torch.zeros(1)] * layer.nl
        o.anchor_grid = [torch.zeros(1)] * layer.nl
        o.register_buffer("anchors", layer.anchors.clone())  # stride units, persistent (v6.0)
        o.m = deepcopy(layer.m)
        o.stride = layer.stride.clone()  # a plain attribute in the original
    else:
        o = deepcopy(layer)  # nn.Upsample
    if hasattr(layer, "i"):  # top-level layers carry their index, source(s), type and parameter count
        o.i, o.f, o.type, o.np = layer.i, layer.f, f"models.{kind}", layer.np
    return o


def write_original_checkpoint(path: Path, ours: Model, version: str = "v6.0", names: list[str] | None = None,
                              extra: dict | None = None) -> None:
    """Pickle ``ours`` the way the original YOLOv5 code would have saved it (model class paths, fp16, extras).

    ``names`` replaces the 80 default class names, ``extra`` adds or replaces checkpoint keys."""
    fake = _fake_modules("DetectionModel" if version == "v7.0" else "Model")
    layers = [_to_original(m, fake) for m in ours.model]
    if version == "v5.0":  # old heads kept a persistent anchor_grid buffer
        det = layers[-1]
        det.anchor_grid = None
        del det.anchor_grid
        det.register_buffer("anchor_grid", torch.zeros(det.nl, 1, det.na, 1, 1, 2))
    model = getattr(fake["models.yolo"], "DetectionModel" if version == "v7.0" else "Model")()
    model.yaml = {k: v for k, v in deepcopy(ours.yaml).items() if k != "yaml_file"}
    model.yaml_file = "yolov5n.yaml"
    model.model = nn.Sequential(*layers)
    model.save, model.names, model.inplace = list(ours.save), list(names or NAMES), True
    model.stride = ours.stride.clone()
    model.hyp = {"box": 0.05}
    ckpt = {"epoch": -1, "best_fitness": np.float64(0.5), "model": model.half(), "ema": None, "updates": None,
            "optimizer": None, "wandb_id": None, "date": "2021-10-12", "opt": fake["utils.general"].Profile(),
            **(extra or {})}
    saved = {k: sys.modules.get(k) for k in fake}
    try:
        sys.modules.update(fake)
        torch.save(ckpt, path)
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v


class Evil:
    """Unpickling this would run a shell command; the safe loader must only record it."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


@pytest.fixture(scope="module")
def yolov5n() -> Model:
    return build("yolov5n.yaml", seed=1)


@pytest.mark.parametrize("version", ["v5.0", "v6.0", "v7.0"])
def test_original_format_loads_with_same_outputs(tmp_path, yolov5n, version):
    f = tmp_path / f"yolov5n-{version}.pt"
    write_original_checkpoint(f, yolov5n, version)
    assert sys.modules["models.common"].Conv.__module__ == "models.common"  # our modules are back in place
    assert "utils.general" not in sys.modules

    ckpt = load_checkpoint(f)
    assert isinstance(ckpt["model"], Model) and ckpt["ema"] is None and ckpt["epoch"] == -1
    assert float(ckpt["best_fitness"]) == 0.5
    model = load_model(f)  # fused, float, eval
    assert model.names == dict(enumerate(NAMES))
    assert model.stride.tolist() == [8.0, 16.0, 32.0]
    assert next(model.parameters()).dtype == torch.float32 and not model.training

    reference = deepcopy(yolov5n).half().float()  # the file holds fp16 weights
    x = torch.rand(2, 3, 128, 160)
    with torch.no_grad():
        ours, loaded = reference(x)[0], model(x)[0]
    assert ours.shape == loaded.shape == (2, 84, 3 * (16 * 20 + 8 * 10 + 4 * 5))
    assert (ours - loaded).abs().max() < 1e-3


def test_our_checkpoint_format(tmp_path, yolov5n):
    f = tmp_path / "best.pt"
    m = deepcopy(yolov5n)
    m.names = {i: n for i, n in enumerate(NAMES)}
    torch.save({"epoch": 3, "best_fitness": 0.1, "model": None, "ema": deepcopy(m).half(), "updates": 10,
                "optimizer": {"state": {}}, "train_args": {"epochs": 3}, "date": "2026-11-01", "version": "8.4.190"}, f)
    ckpt = load_checkpoint(f)
    assert ckpt["model"] is None and isinstance(ckpt["ema"], Model) and ckpt["train_args"] == {"epochs": 3}
    model = load_model(f, fuse=False)
    assert model.names[79] == "thing79"
    x = torch.rand(1, 3, 128, 128)
    with torch.no_grad():
        assert (m.half().float()(x)[0] - model(x)[0]).abs().max() < 1e-4


def test_unpickling_runs_no_foreign_code(tmp_path, yolov5n):
    marker = tmp_path / "pwned"
    f = tmp_path / "evil.pt"
    torch.save({"model": deepcopy(yolov5n).half(), "payload": Evil(marker)}, f)
    ckpt = load_checkpoint(f)
    assert not marker.exists()
    assert "Opaque" in repr(ckpt["payload"])


def test_transfer_into_attention_model_remaps_layers(tmp_path):
    src = build("yolov5s.yaml", seed=2)
    f = tmp_path / "yolov5s.pt"
    write_original_checkpoint(f, src, "v6.0")
    dst = Model(ROOT / "models" / "yolov5s-ema.yaml", verbose=False)
    n, total = transfer_weights(dst, f)
    att = [k for k in dst.state_dict() if k.startswith(("model.7.", "model.10."))]  # the two EMA layers
    assert total == len(dst.state_dict()) and n == total - len(att)
    # backbone P4 C3 (6 -> 6), the layer after the first EMA (7 -> 8), the head and Detect (24 -> 26)
    s, d = src.state_dict(), dst.state_dict()
    for a, b in (("model.6.cv1.conv.weight", "model.6.cv1.conv.weight"),
                 ("model.7.conv.weight", "model.8.conv.weight"),
                 ("model.9.cv2.conv.weight", "model.11.cv2.conv.weight"),
                 ("model.24.m.2.weight", "model.26.m.2.weight"), ("model.24.anchors", "model.26.anchors")):
        assert torch.equal(s[a].half().float(), d[b]), (a, b)


def test_transfer_skips_mismatched_shapes(yolov5n):
    dst = Model(ROOT / "models" / "yolov5n.yaml", nc=10, verbose=False)
    n, total = transfer_weights(dst, yolov5n)
    assert n == total - 6  # the three Detect convs' weights and biases depend on nc
    n, total = transfer_weights(Model(ROOT / "models" / "yolov5n.yaml", verbose=False), yolov5n.state_dict(),
                                exclude=("anchors",))
    assert n == total - 1


def _zip_of_text(p: Path) -> Path:
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("readme.txt", "hello")
    return p


@pytest.mark.parametrize("kind", ["random", "text", "zip", "no_model", "state_dict", "missing", "directory"])
def test_bad_files_give_one_clear_error(tmp_path, kind, yolov5n):
    f = tmp_path / f"{kind}.pt"
    if kind == "random":
        f.write_bytes(np.random.default_rng(0).bytes(4096))
    elif kind == "text":
        f.write_text("this is not a checkpoint\n")
    elif kind == "zip":
        _zip_of_text(f)
    elif kind == "no_model":
        torch.save({"epoch": 1, "optimizer": None}, f)
    elif kind == "state_dict":
        torch.save(yolov5n.state_dict(), f)
    elif kind == "directory":
        f.mkdir()
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(f)
    msg = str(e.value)
    assert str(f) in msg and "expected" in msg and "\n" not in msg


def test_checkpoint_pickled_with_attention_in_models_common_loads(tmp_path, monkeypatch):
    """Files saved before the attention modules moved to models/attention/ name them `models.common.EMA`."""
    from models.attention import EMA

    model = build("yolov5s-ema.yaml", seed=4)
    monkeypatch.setattr(EMA, "__module__", "models.common")  # pickle the class under its old path
    f = tmp_path / "old.pt"
    torch.save({"epoch": 1, "model": deepcopy(model).half(), "ema": None}, f)
    assert b"models.common\nEMA" in zipfile.ZipFile(f).read("old/data.pkl")
    monkeypatch.undo()
    loaded = load_model(f, fuse=False)
    assert isinstance(loaded.model[7], EMA)
    x = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        assert (model.half().float()(x)[0] - loaded(x)[0]).abs().max() < 1e-3
