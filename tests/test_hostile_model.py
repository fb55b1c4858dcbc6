"""Hostile and mistaken model files: YAMLs that would build absurdly large models, checkpoints whose tensors do not fit
their config or that were cut short, exports that are not what they claim (ONNX, OpenVINO), and export.py writing
where it cannot. Each must fail with one line naming the file, the layer/key/shape and what to do."""

from __future__ import annotations

import pickle
import random
from copy import deepcopy
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import yaml

import detect
import export
import val
from models import yolo
from models.classify import ClassificationModel, load_cls_yaml
from models.yolo import Model, ModelYAMLError
from models.yolo import main as yolo_main
from tests.helpers import one_error
from utils import exporters
from utils.checkpoint import CheckpointError, check_export_format, load_checkpoint

pytestmark = [pytest.mark.filterwarnings("ignore::FutureWarning"),
              pytest.mark.filterwarnings("ignore:Couldn.t retrieve source code:UserWarning")]  # legacy torch.save
ROOT = Path(__file__).resolve().parents[1]
IMAGES = str(ROOT / "data" / "images")



@pytest.fixture(scope="module")
def model() -> Model:
    cfg = yaml.safe_load((ROOT / "models" / "yolov5n.yaml").read_text())
    cfg["nc"] = 2
    torch.manual_seed(0)
    m = Model(cfg, verbose=False).eval()
    m.names = {0: "cat", 1: "dog"}
    return m


@pytest.fixture
def nothing_built(monkeypatch) -> list:
    """Every Conv2d whose weights get initialised (i.e. built) during the test."""
    built: list = []
    monkeypatch.setattr(nn.Conv2d, "reset_parameters", lambda self: built.append(self))
    return built


# ----------------------------------------------------------------------------------------------------
# 1. Model YAMLs within sane sizes, checked before any layer is built
# ----------------------------------------------------------------------------------------------------

def _edit(where: str, value):
    def edit(cfg: dict) -> None:
        if "." in where:
            section, i, *j = where.split(".")
            if j:
                cfg[section][int(i)][int(j[0])] = value
            else:
                cfg[section][int(i)] = value
        else:
            cfg[where] = value
    return edit


@pytest.mark.parametrize("edit, message", [
    (_edit("depth_multiple", 1000), r"depth_multiple: 1000 is more than 10, .*yolov5x: depth_multiple 1\.33.*; "
                                    r"layer 2 \(C3\) would repeat 3,000 times instead of 3"),
    (_edit("width_multiple", 1000), r"width_multiple: 1000 is more than 10.*layer 0 \(Conv\) would have 64,000 "
                                    r"channels instead of 64"),
    (_edit("backbone.2.1", 1000), r"layer 2 \[-1, 1000, 'C3', \[128\]\]: C3 would repeat 330 times \(number 1000 x "
                                  r"depth_multiple 0\.33\), more than 128"),
    (_edit("backbone.8.3", [100000]), r"layer 8 \[-1, 3, 'C3', \[100000\]\]: C3 would have 25,000 output channels, "
                                      r"more than 16,384"),
    (_edit("backbone.1.3", [128, 1001, 2]), r"layer 1 .*Conv kernel 1001 is larger than 64"),
    (_edit("backbone.2.3", [128, True, 1, 1000.0]), r"layer 2 .*C3 would have 32,000 hidden channels \(e=1000\.0 with "
                                                    r"32 input and 32 output channels\)"),
    (_edit("nc", 10 ** 7), r"nc: 10,000,000 is more than 100,000 classes"),
    (_edit("nc", 6000), r"Detect would have 3 anchors x \(6000 classes \+ 5\) = 18,015 output channels per level"),
    (_edit("anchors", 10 ** 9), r"anchors: 1,000,000,000 anchors per level is more than 100"),
    (_edit("ch", 100000), r"ch: 100,000 is more than 16,384 input channels"),
])
def test_oversized_yaml_fails_before_anything_is_built(tmp_path, edit, message, nothing_built):
    cfg = yaml.safe_load((ROOT / "models" / "yolov5n.yaml").read_text())
    edit(cfg)
    f = tmp_path / "big.yaml"
    f.write_text(yaml.safe_dump(cfg, sort_keys=False))
    with pytest.raises(ModelYAMLError, match=message) as e:
        Model(f, verbose=False)
    assert str(e.value).startswith(str(f)) and "\n" not in str(e.value)
    assert not nothing_built  # not one layer was built


def test_depth_multiple_1000_on_the_command_line(tmp_path, capsys, nothing_built):
    cfg = yaml.safe_load((ROOT / "models" / "yolov5s.yaml").read_text())
    cfg["depth_multiple"] = 1000
    f = tmp_path / "deep.yaml"
    f.write_text(yaml.safe_dump(cfg, sort_keys=False))
    err = one_error(yolo_main, ["--cfg", str(f)], capsys)
    assert err.startswith(f"ERROR: {f}: depth_multiple: 1000 is more than 10")
    assert "layer 2 (C3) would repeat 3,000 times instead of 3" in err
    assert not nothing_built


def _sizes(d: dict) -> tuple[float, int, int]:
    """(largest multiple, most repeats of a row, widest scaled channel argument) of a model YAML, as parse_model
    scales them."""
    gd, gw = d.get("depth_multiple", 1), d.get("width_multiple", 1)
    rows = d["backbone"] + d["head"]
    repeats = max(max(round(r[1] * gd), 1) if r[1] > 1 else r[1] for r in rows)
    widths = [r[3][0] * gw for r in rows if r[2] not in ("Detect", "Classify", "LinearHead")
              and isinstance(r[3], list) and r[3] and isinstance(r[3][0], int) and not isinstance(r[3][0], bool)]
    return max(gd, gw), repeats, int(max(widths, default=0))


def test_every_shipped_yaml_lies_well_inside_the_limits():
    files = [f for f in sorted((ROOT / "models").rglob("*.yaml")) if "backbone" in f.read_text()]
    assert len(files) > 50
    sizes = [_sizes(yaml.safe_load(f.read_text())) for f in files]
    multiple, repeats, width = (max(s[k] for s in sizes) for k in range(3))
    assert multiple == 1.33 and repeats == 36 and width == 2048  # yolov5x; ResNet-152 stage 3; ResNet last stage
    assert multiple * 5 < yolo.MAX_MULTIPLE and repeats * 3 < yolo.MAX_REPEATS and width * 4 < yolo.MAX_CHANNELS


@pytest.mark.parametrize("edit, message", [
    (_edit("depth_multiple", 1000), r"depth_multiple: 1000 is more than 10.*layer 5 \(InvertedResidual\) would "
                                    r"repeat 2,000 times instead of 2"),
    (_edit("width_multiple", 50), r"width_multiple: 50 is more than 10.*layer 0 \(ConvAct\) would have 1,600 "
                                  r"channels instead of 32"),
    (_edit("backbone.2.1", 500), r"layer 2 \[-1, 500, 'InvertedResidual', \[24, 2, 6\]\]: InvertedResidual would "
                                 r"repeat 500 times \(number 500 x depth_multiple 1\.0\), more than 128"),
    (_edit("backbone.2.3", [24, 2, 2000]), r"layer 2 .*InvertedResidual would have 32,000 hidden channels \(t=2000 "
                                           r"with 16 input and 24 output channels\)"),
    (_edit("nc", 10 ** 6), r"nc: 1,000,000 is more than 100,000 classes"),
])
def test_oversized_classifier_yaml_fails_before_anything_is_built(edit, message, nothing_built):
    cfg = load_cls_yaml(ROOT / "models" / "cls" / "mobilenetv2.yaml")
    cfg["yaml_file"] = "mobilenetv2-big.yaml"
    edit(cfg)
    with pytest.raises(ModelYAMLError, match=message) as e:
        ClassificationModel(cfg, verbose=False)
    assert str(e.value).startswith("mobilenetv2-big.yaml: ")
    assert not nothing_built


# ----------------------------------------------------------------------------------------------------
# 2. A checkpoint whose tensors do not fit its own config
# ----------------------------------------------------------------------------------------------------

def test_wrong_shaped_tensor_names_the_key_and_both_shapes(model, tmp_path, capsys):
    m = deepcopy(model)
    m.model[0].conv.weight = nn.Parameter(torch.zeros(8, 3, 6, 6))
    f = tmp_path / "edited.pt"
    torch.save({"epoch": -1, "model": m.half()}, f)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(f)
    assert str(e.value).startswith(f"{f}: weights do not fit the model built from its own config: "
                                   f"'model.0.conv.weight' has shape (8, 3, 6, 6) in the checkpoint but (16, 3, 6, 6) "
                                   f"in the model; ")
    assert "use the checkpoint train.py saved" in str(e.value) and "Error(s) in loading" not in str(e.value)
    err = one_error(val.main, ["--weights", str(f)], capsys)
    assert err == f"ERROR: {e.value}"


def test_missing_and_unexpected_tensors_are_named(model, tmp_path):
    m = deepcopy(model)
    m.model[3].register_buffer("extra", torch.zeros(2))
    del m.model[24].m[2].bias
    m.model[24].m[2].bias = None
    f = tmp_path / "mixed.pt"
    torch.save({"model": m}, f)
    with pytest.raises(CheckpointError, match=r"'model\.24\.m\.2\.bias' missing from the checkpoint; "
                                              r"'model\.3\.extra' not in the model; the file was edited"):
        load_checkpoint(f)


# ----------------------------------------------------------------------------------------------------
# 3. Truncated checkpoints
# ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
@pytest.mark.parametrize("keep", [0.0001, 0.3, 0.999])
def test_truncated_checkpoint_is_called_truncated(model, tmp_path, capsys, legacy, keep):
    full = tmp_path / "full.pt"
    torch.save({"epoch": -1, "model": model}, full, _use_new_zipfile_serialization=not legacy)
    data = full.read_bytes()
    f = tmp_path / "last.pt"
    f.write_bytes(data[: max(int(len(data) * keep), 40)])
    size = f.stat().st_size
    err = one_error(detect.main, ["--weights", str(f), "--source", IMAGES, "--nosave"], capsys)
    assert err == (f"ERROR: {f}: truncated PyTorch checkpoint ({size:,} bytes): the file was cut short (an "
                   f"interrupted copy or save?); copy it again")
    assert f.stat().st_size == size  # the user's file is left as it was


def test_truncated_plain_pickle_and_intact_zip(tmp_path):
    f = tmp_path / "cut.pt"
    f.write_bytes(pickle.dumps({"model": list(range(1000))})[:100])
    with pytest.raises(CheckpointError, match=r"cut\.pt: truncated Python pickle \(100 bytes\): the file was cut"):
        load_checkpoint(f)
    import zipfile

    z = tmp_path / "notes.pt"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("readme.txt", "hello")
    with pytest.raises(CheckpointError, match=r"a zip archive of 1 file\(s\) \(readme\.txt\), not a PyTorch"):
        load_checkpoint(z)  # a complete zip is not called truncated
    z.write_bytes(z.read_bytes()[:40])
    with pytest.raises(CheckpointError, match=r"notes\.pt: truncated zip archive \(40 bytes\)"):
        load_checkpoint(z)


# ----------------------------------------------------------------------------------------------------
# 4. Exports checked when loaded: ONNX files and OpenVINO folders
# ----------------------------------------------------------------------------------------------------

def _onnx_model(path: Path, inputs: dict, outputs: dict, nodes: list, meta: dict | None = None,
                initializers: list | None = None) -> Path:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(nodes, path.stem,
                              [helper.make_tensor_value_info(k, TensorProto.FLOAT, v) for k, v in inputs.items()],
                              [helper.make_tensor_value_info(k, TensorProto.FLOAT, v) for k, v in outputs.items()],
                              initializer=initializers or [])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    for k, v in (meta or {}).items():
        entry = m.metadata_props.add()
        entry.key, entry.value = k, str(v)
    onnx.checker.check_model(m)
    onnx.save(m, str(path))
    return path


def _reshaped(path: Path, out_shape: list[int], meta: dict | None = None, in_shape=(1, 3, 64, 64)) -> Path:
    """An ONNX graph that reshapes its image input to ``out_shape``: shaped like a model, computes nothing."""
    from onnx import TensorProto, helper

    shape = helper.make_tensor("shape", TensorProto.INT64, [len(out_shape)], out_shape)
    return _onnx_model(path, {"images": list(in_shape)}, {"output0": out_shape},
                       [helper.make_node("Reshape", ["images", "shape"], ["output0"])], meta, [shape])


def _linear(path: Path, in_shape: list[int], out_features: int, meta: dict | None = None) -> Path:
    """An ONNX classifier shape: the image flattened and multiplied by a weight matrix, ``(batch, out_features)``."""
    from onnx import TensorProto, helper

    n = in_shape[1] * in_shape[2] * in_shape[3]
    w = helper.make_tensor("w", TensorProto.FLOAT, [n, out_features], [0.0] * (n * out_features))
    return _onnx_model(path, {"images": in_shape}, {"logits": [in_shape[0], out_features]},
                       [helper.make_node("Flatten", ["images"], ["flat"]), helper.make_node("MatMul", ["flat", "w"],
                                                                                            ["logits"])], meta, [w])


def test_onnx_of_random_bytes_is_not_an_onnx_model(tmp_path, capsys):
    f = tmp_path / "best.onnx"
    f.write_bytes(random.Random(0).randbytes(4096))
    err = one_error(detect.main, ["--weights", str(f), "--source", IMAGES, "--nosave"], capsys)
    assert err.startswith(f"ERROR: {f}: not an ONNX model (4096 bytes of unrecognised binary data: ")
    assert err.endswith("export one with python export.py --weights best.pt --include onnx")
    assert "yolo26n" not in err
    f.write_text("hello world\n")
    with pytest.raises(CheckpointError, match=r'not an ONNX model \(a text file \("hello world"\)'):
        check_export_format(f)


def test_onnx_of_something_else_names_the_shapes_found(tmp_path, capsys):
    from onnx import helper

    add = _onnx_model(tmp_path / "add.onnx", {"A": [1, 4], "B": [1, 4]}, {"C": [1, 4]},
                      [helper.make_node("Add", ["A", "B"], ["C"])])
    err = one_error(detect.main, ["--weights", str(add), "--source", IMAGES, "--nosave"], capsys)
    assert err == (f"ERROR: {add}: not an ONNX detector export: input(s) 'A' (1, 4), 'B' (1, 4), output(s) 'C' "
                   f"(1, 4); expected one image input (batch, 3, height, width); export one with python export.py "
                   f"--weights add.pt --include onnx")
    cls = _linear(tmp_path / "cls.onnx", [1, 3, 8, 8], 1000)  # a classifier: (batch, classes)
    err = one_error(val.main, ["--weights", str(cls)], capsys)
    assert ("input(s) 'images' (1, 3, 8, 8), output(s) 'logits' (1, 1000); expected a detector's output (batch, "
            "4 + classes, anchors) (or YOLOv5's (batch, anchors, 5 + classes))") in err
    two = _reshaped(tmp_path / "two.onnx", [1, 6, 2048], {"names": {0: "a", 1: "b", 2: "c"}})
    with pytest.raises(CheckpointError, match=r"expected a detector's output \(batch, 7 = 4 \+ 3 classes, anchors\) "
                                              r"\(or YOLOv5's \(batch, anchors, 8\)\)"):
        check_export_format(two)  # 6 rows are 4 + 2 classes, but its metadata names 3


def test_onnx_shaped_like_a_detector_or_classifier_passes(tmp_path):
    names = {0: "a", 1: "b"}
    ours = _reshaped(tmp_path / "ours.onnx", [1, 6, 2048], {"names": names, "task": "detect"})  # (1, 4 + nc, N)
    yolov5 = _reshaped(tmp_path / "yolov5.onnx", [1, 1792, 7], {"names": names})  # (1, N, 5 + nc)
    for f in (ours, yolov5):
        assert check_export_format(f) == f
    cls = _linear(tmp_path / "c.onnx", [1, 3, 8, 8], 2, {"names": names, "task": "classify"})
    assert check_export_format(cls, task="classify") == cls
    with pytest.raises(CheckpointError, match=r"ours\.onnx: a detector export \(its metadata says task 'detect'\), "
                                              r"but this script runs classifiers; use it with detect\.py or val\.py"):
        check_export_format(ours, task="classify")


def _openvino_folder(root: Path, *files: str) -> Path:
    d = root / "best_openvino_model"
    d.mkdir()
    for name in files:
        (d / name).write_text("x")
    return d


@pytest.mark.parametrize("files, message", [
    (("best.xml", "metadata.yaml"), r"OpenVINO folder without best\.bin \(its weights\); copy the whole folder"),
    (("best.xml", "best.bin"), r"OpenVINO folder without metadata\.yaml \(its metadata\)"),
    (("best.bin", "metadata.yaml"), r"OpenVINO folder without its model \.xml file \(found best\.bin, "
                                    r"metadata\.yaml\); export one with python export\.py --weights best\.pt "
                                    r"--include openvino"),
])
def test_openvino_folder_missing_a_file_names_it(tmp_path, capsys, files, message):
    d = _openvino_folder(tmp_path, *files)
    err = one_error(detect.main, ["--weights", str(d), "--source", IMAGES, "--nosave"], capsys)
    assert err.startswith(f"ERROR: {d}: ")
    with pytest.raises(CheckpointError, match=message):
        check_export_format(d)


def test_complete_openvino_folder_passes_the_check(tmp_path):
    d = _openvino_folder(tmp_path, "best.xml", "best.bin", "metadata.yaml")
    assert check_export_format(d) == d
    yolov5 = tmp_path / "v5" / "yolov5s_openvino_model"  # the original YOLOv5 keeps its metadata in <name>.yaml
    yolov5.mkdir(parents=True)
    for name in ("yolov5s.xml", "yolov5s.bin", "yolov5s.yaml"):
        (yolov5 / name).write_text("x")
    assert check_export_format(yolov5) == yolov5


# ----------------------------------------------------------------------------------------------------
# 5. export.py: where the exports go
# ----------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def weights(tmp_path_factory, model) -> Path:
    f = tmp_path_factory.mktemp("w") / "tiny.pt"
    torch.save({"epoch": -1, "model": None, "ema": deepcopy(model).half()}, f)
    return f


def test_export_into_a_folder_that_cannot_exist(weights, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    out = blocker / "exports"  # a folder under a regular file: no one, root included, can create it
    err = one_error(export.main, ["--weights", str(weights), "--include", "onnx", "--imgsz", "64", "--project",
                                  str(out)], capsys)
    assert err == (f"ERROR: cannot write the exports into the output folder {out} (Not a directory); choose a "
                   f"folder you can write to with --project DIR (and --name NAME)")
    assert blocker.read_text() == "not a folder"


def test_export_next_to_read_only_weights_suggests_project(weights, capsys, monkeypatch):
    import tempfile

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "TemporaryFile", refuse)
    err = one_error(export.main, ["--weights", str(weights), "--include", "onnx", "--imgsz", "64"], capsys)
    assert err == (f"ERROR: cannot write the exports into {weights.parent}, the folder of the weights, (Permission "
                   f"denied); choose a folder you can write to with --project DIR (and --name NAME)")


def test_export_project_name_and_exist_ok(weights, tmp_path, monkeypatch):
    monkeypatch.setattr(exporters, "check_export", lambda *a, **k: ({"max_abs_diff": 0.0}, ""))  # tested elsewhere
    before = sorted(p.name for p in weights.parent.iterdir())
    args = {"weights": weights, "include": ["onnx"], "imgsz": [64], "project": tmp_path / "runs", "name": "exp"}
    first = export.run(**args)["onnx"]["file"]
    second = export.run(**args)["onnx"]["file"]
    again = export.run(**args, exist_ok=True)["onnx"]["file"]
    assert first == tmp_path / "runs" / "exp" / "tiny.onnx" and second == tmp_path / "runs" / "exp2" / "tiny.onnx"
    assert again == first and first.is_file() and second.is_file()
    assert check_export_format(first) == first  # a real export passes the load-time check
    assert sorted(p.name for p in weights.parent.iterdir()) == before  # nothing written next to the weights
    flat = export.run(weights=weights, include=["onnx"], imgsz=[64], project=tmp_path / "flat")["onnx"]["file"]
    assert flat == tmp_path / "flat" / "tiny.onnx"


def test_export_failure_leaves_no_new_folder(tmp_path, capsys):
    bad = tmp_path / "bad.pt"
    bad.write_text("hello")
    err = one_error(export.main, ["--weights", str(bad), "--include", "onnx", "--project", str(tmp_path / "out"),
                                  "--name", "exp"], capsys)
    assert "not a PyTorch checkpoint" in err and not (tmp_path / "out" / "exp").exists()
