"""--attention: attention layers inserted into a model YAML with every later index shifted, as a hand edit would."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from models.insert import attention_cfg, dump_model_yaml, insert_attention, parse_attention_spec, table2_sites
from models.yolo import Model, load_model_yaml, main, run

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "models"
YOLOV5S = load_model_yaml(MODELS / "yolov5s.yaml")


@pytest.mark.parametrize("name", ["EMA", "CA", "CBAM", "SA", "ECA"])
def test_table2_sites_reproduce_the_table2_yamls(name):
    table2 = load_model_yaml(MODELS / f"yolov5s-{name.lower()}.yaml")
    ours = insert_attention(YOLOV5S, name)
    assert ours["backbone"] == table2["backbone"] and ours["head"] == table2["head"]
    torch.manual_seed(0)
    a = Model(ours, verbose=False)
    torch.manual_seed(0)
    b = Model(table2, verbose=False)
    assert [(m.i, m.f, m.type, m.np) for m in a.model] == [(m.i, m.f, m.type, m.np) for m in b.model]
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_named_sites_shift_every_later_index():
    assert table2_sites(YOLOV5S) == [6, 8]
    assert insert_attention(YOLOV5S, "simam", [8, 6]) == insert_attention(YOLOV5S, "SimAM")
    d = insert_attention(YOLOV5S, "SE", [4, 13, 17])  # backbone P3 C3 and two head C3s
    rows = d["backbone"] + d["head"]
    assert [i for i, r in enumerate(rows) if r[2] == "SE"] == [5, 15, 20]
    assert rows[13][0] == [-1, 7] and rows[18][0] == [-1, 5]  # the P4 concat (C3 6 -> 7); P3's reads its SE
    assert rows[22][0] == [-1, 16] and rows[25][0] == [-1, 11]  # bottom-up concats: head 1x1 convs 14, 10
    assert rows[-1][0] == [20, 23, 26]  # Detect reads the P3 head SE and the two other head C3s
    m = Model(d, verbose=False)
    y, raw = m.eval()(torch.zeros(1, 3, 64, 96))
    assert [r.shape[2:4] for r in raw] == [(8, 12), (4, 6), (2, 3)]


def test_relative_indices_keep_naming_the_same_layer():
    d = {"nc": 1, "depth_multiple": 1.0, "width_multiple": 1.0, "anchors": 1,
         "backbone": [[-1, 1, "Conv", [8, 3]], [-1, 1, "Conv", [8, 3]], [-2, 1, "Conv", [8, 3]]],
         "head": [[[-1, 1], 1, "Concat", [1]], [[3], 1, "Detect", ["nc", "anchors"]]]}
    out = insert_attention(d, "ECA", [0, 1], args=[3])
    rows = out["backbone"] + out["head"]
    assert [r[2] for r in rows] == ["Conv", "ECA", "Conv", "ECA", "Conv", "Concat", "Detect"]
    assert rows[1][3] == [3] and rows[4][0] == -3 and rows[5][0] == [-1, 3] and rows[6][0] == [5]


@pytest.mark.parametrize("spec, words", [
    ("NotAModule", "unknown attention module 'NotAModule'; known modules: .*SimAM"),
    ("SimAM@6,x", "must be integers"),
    ("SimAM@", "name at least one layer"),
    ("SimAM@24", r"cannot insert after layer\(s\) 24; this model's layers are 0..24"),
    ("SimAM@-1", r"cannot insert after layer\(s\) -1"),
])
def test_bad_specs_are_one_clear_error(spec, words):
    with pytest.raises(ValueError, match=words):
        attention_cfg("yolov5s.yaml", spec)


def test_spec_parsing_uses_the_registry_spelling():
    assert parse_attention_spec("coordatt@6, 8") == ("CoordAtt", [6, 8])
    assert parse_attention_spec("simam") == ("SimAM", None)


def test_cli_save_yaml_round_trips(tmp_path, capsys):
    out = tmp_path / "yolov5s-simam.yaml"
    assert main(["--cfg", "yolov5s.yaml", "--attention", "SimAM", "--save-yaml", str(out)]) == 0
    model = run(cfg="yolov5s.yaml", attention="SimAM")
    text = out.read_text()
    assert "  - [-1, 1, SimAM, []]  # 7" in text and "  - [[-1, 7], 1, Concat, [1]]  # 14" in text
    saved = yaml.safe_load(text)
    assert {k: saved[k] for k in YOLOV5S} == {k: v for k, v in insert_attention(YOLOV5S, "SimAM").items()}
    assert [type(model.model[i]).__name__ for i in (7, 10)] == ["SimAM", "SimAM"]
    assert dump_model_yaml(yaml.safe_load(text)) == dump_model_yaml(saved)
    with pytest.raises(SystemExit):
        main(["--cfg", "yolov5s.yaml", "--attention", "Nope"])
    assert "unknown attention module 'Nope'" in capsys.readouterr().err


def test_train_flag_trains_the_inserted_model(tmp_path, monkeypatch):
    import train
    import utils.engine

    seen = {}

    class Recorder:
        def __init__(self, **setup):
            seen.update(setup)

        def train(self):
            pass

    monkeypatch.setattr(utils.engine, "YOLOv5Trainer", Recorder)
    train.run(cfg="yolov5n.yaml", attention="CBAM@4", project=str(tmp_path), data="data/shapes.yaml")
    cfg = Path(seen["overrides"]["model"])
    assert cfg == tmp_path / "yolov5n-cbam.yaml"
    rows = yaml.safe_load(cfg.read_text())
    assert rows["backbone"][5] == [-1, 1, "CBAM", []]
    assert rows["head"][2][0] == [-1, 7] and rows["head"][6][0] == [-1, 5]
