"""benchmarks.py: table rows/columns, paper join, group baselines, CSV, --modules, and the optimised attention modules.

No timing is asserted here: timings are for benchmarks.py itself.
"""

import csv
import math

import pytest
import torch

import benchmarks as bm
from models.attention_reference import REFERENCE_FORWARD
from models.common import EMA

TABLE2 = bm.GROUPS["s"] + bm.GROUPS["x-p2"]


def randomize(module: torch.nn.Module, seed: int = 1) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return module


# ----- which models ---------------------------------------------------------------------------------


def test_groups_cover_table2_in_paper_order():
    assert bm.resolve_models(["s"]) and [s.name for s in bm.resolve_models(["s"])] == bm.GROUPS["s"]
    assert [s.name for s in bm.resolve_models(["x-p2"])] == bm.GROUPS["x-p2"]
    assert [s.name for s in bm.resolve_models(["all"])] == TABLE2
    assert set(TABLE2) == set(bm.PAPER)


def test_variant_brings_its_baseline_and_duplicates_collapse(capsys):
    specs = bm.resolve_models(["yolov5s-ema", "models/yolov5s-ema.yaml", "yolov5x-p2-ca"])
    assert [s.name for s in specs] == ["yolov5s", "yolov5s-ema", "yolov5x-p2", "yolov5x-p2-ca"]
    assert "adding yolov5s" in capsys.readouterr().out


def test_unknown_model_and_format_are_clear_errors(capsys):
    with pytest.raises(bm.BenchmarkError, match="not a group"):
        bm.resolve_models(["yolov5q"])
    with pytest.raises(bm.BenchmarkError, match="unknown; choose from onnx, openvino"):
        bm.parse_formats("onnx,tensorrt")
    assert bm.main(["--models", "nope.yaml"]) == 2
    assert bm.main(["--half", "--models", "yolov5n"]) == 2
    err = capsys.readouterr().err
    assert "nope.yaml" in err and "--half needs a CUDA device" in err


def test_missing_script_hook_says_not_available_yet():
    with pytest.raises(bm.BenchmarkError, match="needs no_such_script.py, which is not available yet"):
        bm._require_script("no_such_script", "--formats")


@pytest.mark.parametrize("name, base", [("yolov5s-ema", "yolov5s"), ("yolov5x-p2-cbam", "yolov5x-p2"),
                                        ("yolov5s", "yolov5s"), ("yolov5n-se", "yolov5n"), ("custom", "custom")])
def test_baseline_name(name, base):
    assert bm.baseline_name(name) == base


# ----- table arithmetic -----------------------------------------------------------------------------


def test_paper_numbers_joined_on_name():
    row = bm.add_paper({"model": "yolov5s-ema", "params_m": 7.238685, "gflops": 16.75})
    assert row["paper_params_m"] == 7.24 and row["paper_gflops"] == 16.53
    assert row["d_params_m"] == pytest.approx(7.238685 - 7.24)
    assert row["d_gflops_pct"] == pytest.approx(100 * (16.75 / 16.53 - 1))
    assert (row["paper_map50"], row["paper_map50_95"]) == (57.8, 38.4)
    p2 = bm.add_paper({"model": "yolov5x-p2-ca", "params_m": 91.27863, "gflops": 315.6})
    assert p2["paper_params_m"] == 91.28 and p2["paper_gflops"] == 315.2
    other = bm.add_paper({"model": "yolov5n", "params_m": 1.87, "gflops": 4.5})
    assert other["paper_params_m"] is None and other["d_gflops_pct"] is None
    small = bm.add_paper({"model": "yolov5s", "params_m": 7.235, "gflops": 0.17}, imgsz=64)
    assert small["paper_params_m"] == 7.23 and small["paper_gflops"] is None and small["d_gflops_pct"] is None


def test_relative_latency_uses_the_group_baseline():
    rows = [{"model": m, "baseline": bm.baseline_name(m), "latency_ms": t} for m, t in
            [("yolov5s", 100.0), ("yolov5s-ema", 102.0), ("yolov5x-p2", 1000.0), ("yolov5x-p2-ema", 1030.0),
             ("yolov5m-ca", 50.0)]]
    bm.add_relative(rows, "latency_ms", "rel_latency")
    rel = {r["model"]: r["rel_latency"] for r in rows}
    assert rel["yolov5s"] == 1.0 and rel["yolov5s-ema"] == pytest.approx(1.02)
    assert rel["yolov5x-p2"] == 1.0 and rel["yolov5x-p2-ema"] == pytest.approx(1.03)
    assert rel["yolov5m-ca"] is None  # its baseline was not measured


def test_columns_follow_the_data():
    rows = [bm.add_paper({"model": "yolov5s", "baseline": "yolov5s", "params_m": 7.2, "gflops": 16.6,
                          "latency_ms": 10.0, "rel_latency": 1.0, "peak_mem_mb": 50.0})]
    keys = [c.key for c in bm.columns_for(rows, [])]
    assert keys[:4] == ["model", "params_m", "paper_params_m", "d_params_m"]
    assert "latency_ms" in keys and "rel_latency" in keys and "peak_mem_mb" in keys
    assert not any(k.startswith(("train", "map", "paper_map", "onnx")) for k in keys)
    rows[0].update(map50=50.0, map50_95=30.0, train_step_ms=5.0, train_img_s=1.0, rel_train=1.0, onnx_ms=5.0,
                   onnx_speedup=2.0)
    keys = [c.key for c in bm.columns_for(rows, ["onnx"])]
    for k in ("map50", "paper_map50", "map50_95", "paper_map50_95", "train_img_s", "rel_train", "onnx_ms",
              "onnx_speedup"):
        assert k in keys
    table = bm.markdown_table(rows, bm.columns_for(rows, ["onnx"]))
    assert table.splitlines()[2].startswith("| yolov5s | 7.20 | 7.23 |")


def test_malloc_setting_is_reported(monkeypatch, capsys):
    monkeypatch.setattr(bm, "_MALLOC", {"tuned": False})
    monkeypatch.setattr(bm, "keep_freed_memory", lambda: True)
    assert bm.configure_malloc(stock=True) == "stock malloc"
    assert bm.configure_malloc(stock=False) == "malloc keeps freed memory"
    assert bm.configure_malloc(stock=True) == "malloc keeps freed memory"  # cannot be undone in-process
    assert "needs a fresh process" in capsys.readouterr().out
    monkeypatch.setattr(bm, "_MALLOC", {"tuned": False})
    monkeypatch.setattr(bm, "keep_freed_memory", lambda: False)  # not glibc
    assert bm.configure_malloc(stock=False) == "stock malloc"


def test_run_folders_increment_like_yolov5(tmp_path):
    assert bm.save_dir_for(tmp_path, "exp") == tmp_path / "exp"
    assert bm.save_dir_for(tmp_path, "exp") == tmp_path / "exp2"
    assert bm.save_dir_for(tmp_path, "exp", exist_ok=True) == tmp_path / "exp"


# ----- interleaving ---------------------------------------------------------------------------------


def test_interleaved_round_robin_and_multiplicity():
    calls = []

    def fn(name, cost):
        def f():
            calls.append(name)
            t = __import__("time").perf_counter()
            while __import__("time").perf_counter() - t < cost:
                pass
        return f

    fns = {"slow": fn("slow", 0.004), "fast_a": fn("fast_a", 0.001), "fast_b": fn("fast_b", 0.001)}
    groups = {"slow": "slow", "fast_a": "fast", "fast_b": "fast"}
    times = bm.interleaved(fns, groups, repeats=2, warmup=1)
    mult = len(times["fast_a"]) // 2
    assert len(times["slow"]) == 2 and mult >= 2 and len(times["fast_b"]) == len(times["fast_a"])
    timed = calls[3:]  # after the warm-up round
    assert timed[:3] == ["slow", "fast_a", "fast_b"]  # round-robin within a round
    assert all(a != b for a, b in zip(timed, timed[1:]) if a.startswith("fast") and b.startswith("fast"))
    assert bm.multiplicities({}, {"a": "a"}) == {"a": 1}


# ----- end to end -----------------------------------------------------------------------------------


def test_run_tiny_writes_table_and_csv(tmp_path, capsys):
    rows = bm.run(["yolov5n"], imgsz=64, repeats=1, warmup=0, project=tmp_path, plots=True, stock_malloc=True)
    assert [r["model"] for r in rows] == ["yolov5n"]
    r = rows[0]
    assert r["params"] == 1_872_157 and r["gflops"] > 0 and r["latency_ms"] > 0 and r["runs"] == 1
    assert r["rel_latency"] == 1.0 and r["peak_mem_mb"] > 0
    out = capsys.readouterr().out
    assert "| model | params (M) |" in out and "| yolov5n | 1.87 |" in out
    save_dir = tmp_path / "exp"
    with open(save_dir / "benchmarks.csv", newline="") as f:
        data = list(csv.DictReader(f))
    assert len(data) == 1 and data[0]["model"] == "yolov5n"
    for k in ("params_m", "gflops", "latency_ms", "rel_latency", "peak_mem_mb", "paper_params_m"):
        assert k in data[0]
    assert float(data[0]["latency_ms"]) == pytest.approx(r["latency_ms"])
    assert (save_dir / "benchmarks.md").read_text().count("| yolov5n |") == 1
    assert (save_dir / "benchmarks.png").stat().st_size > 0


def test_run_with_variant_and_training_step(tmp_path):
    rows = bm.run(["yolov5n"], imgsz=64, repeats=1, warmup=0, stock_malloc=True,
                  project=tmp_path, train=True, train_batch_size=2, train_imgsz=64, memory=False)
    r = rows[0]
    assert r["train_step_ms"] > 0 and r["train_img_s"] == pytest.approx(2 / r["train_step_ms"] * 1e3)
    assert r["rel_train"] == 1.0 and "peak_mem_mb" not in r


def test_formats_add_latency_columns(tmp_path):
    pytest.importorskip("onnxruntime")
    if not (bm.ROOT / "export.py").is_file():
        pytest.skip("export.py not in this checkout")
    rows = bm.run(["yolov5n"], imgsz=64, repeats=1, warmup=0, project=tmp_path, formats="onnx", memory=False,
                  stock_malloc=True)
    assert rows[0]["onnx_ms"] > 0 and rows[0]["onnx_speedup"] > 0
    assert "onnx (ms)" in (tmp_path / "exp" / "benchmarks.md").read_text()


def test_modules_tiny(tmp_path):
    rows = bm.run_modules(imgsz=64, repeats=1, warmup=0, project=tmp_path, stock_malloc=True)
    sites = bm.module_sites(64)
    assert len(rows) == len(sites)
    assert {r["module"] for r in rows} == {"EMA", "CA", "CBAM", "SA", "ECA"}
    for r in rows:
        assert r["fwd_ms"] > 0 and r["fwd_bwd_ms"] > 0
        has_ref = r["module"] in {c.__name__ for c in REFERENCE_FORWARD}
        assert ("ref_fwd_ms" in r) == has_ref and ("fwd_bwd_speedup" in r) == has_ref
    assert {r["shape"] for r in rows if r["module"] == "EMA"} == {"1x256x4x4", "1x512x2x2", "1x640x4x4", "1x320x8x8",
                                                                 "1x320x16x16"}
    assert (tmp_path / "modules" / "modules.csv").is_file()


# ----- the optimised attention modules equal their straightforward formulas -----------------------


OPTIMISED = [(cls, c, kw) for cls in REFERENCE_FORWARD for c, kw in [(256, {}), (64, {"factor": 8})]]


@pytest.mark.parametrize("cls, c, kwargs", OPTIMISED, ids=lambda v: getattr(v, "__name__", str(v)))
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("hw", [(13, 17), (1, 5), (2, 2)])
def test_optimised_module_equals_reference(cls, c, kwargs, batch, hw):
    m = randomize(cls(c, **kwargs)).train()
    reference = REFERENCE_FORWARD[cls]
    x = torch.randn(batch, c, *hw, requires_grad=True)
    y, y_ref = m(x), reference(m, x)
    assert (y - y_ref).abs().max() < 1e-5
    gy = torch.randn_like(y)
    inputs = [x, *m.parameters()]
    grads = torch.autograd.grad(y, inputs, gy)
    grads_ref = torch.autograd.grad(y_ref, inputs, gy)
    for g, g_ref in zip(grads, grads_ref):
        scale = max(1.0, float(g_ref.abs().max()))  # parameter gradients sum over many pixels
        assert (g - g_ref).abs().max() < 1e-5 * scale
    with torch.no_grad():  # channels_last input (AutoBackend uses it on CPU) gives the same result
        assert (m(x.detach().contiguous(memory_format=torch.channels_last)) - y_ref).abs().max() < 1e-5


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the TorchScript-based exporter, which export.py uses
@pytest.mark.parametrize("cls", list(REFERENCE_FORWARD), ids=lambda v: v.__name__)
def test_optimised_module_exports_to_onnx(cls, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    m = randomize(cls(64, 8) if cls is EMA else cls(128)).eval()
    c = 64 if cls is EMA else 128
    f = tmp_path / "m.onnx"
    torch.onnx.export(m, torch.randn(1, c, 8, 8), str(f), input_names=["x"], output_names=["y"], opset_version=17,
                      dynamic_axes={"x": {0: "b", 2: "h", 3: "w"}}, dynamo=False)
    session = ort.InferenceSession(str(f), providers=["CPUExecutionProvider"])
    for shape in [(1, c, 8, 8), (3, c, 13, 7)]:
        x = torch.randn(*shape)
        y = torch.from_numpy(session.run(None, {"x": x.numpy()})[0])
        with torch.no_grad():
            assert (y - REFERENCE_FORWARD[cls](m, x)).abs().max() < 1e-4
    assert math.isfinite(float(y.abs().max()))


@pytest.mark.parametrize("cls", list(REFERENCE_FORWARD), ids=lambda v: v.__name__)
def test_optimised_module_converts_to_openvino(cls):
    ov = pytest.importorskip("openvino")
    m = randomize(cls(64, 8) if cls is EMA else cls(128)).eval()
    x = torch.randn(2, 64 if cls is EMA else 128, 9, 11)
    compiled = ov.Core().compile_model(ov.convert_model(m, example_input=x), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    with torch.no_grad():
        assert (torch.from_numpy(compiled(x.numpy())[0]) - REFERENCE_FORWARD[cls](m, x)).abs().max() < 1e-4
