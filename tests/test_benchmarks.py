"""benchmarks.py: table rows/columns, paper join, group baselines, CSV, --modules.

No timing is asserted here: timings are for benchmarks.py itself.
"""

import csv
import platform
import time

import pytest
import torch

import benchmarks
from bench import BenchmarkError, common, deploy, model_bench, module_bench, paper, report, timing
from utils import allocator
from utils.module_cost import catalogue_names, forward_gflops, module_cost

TABLE2 = paper.GROUPS["s"] + paper.GROUPS["x-p2"]


# ----- which models ---------------------------------------------------------------------------------


def test_groups_cover_table2_in_paper_order():
    specs = model_bench.resolve_models(["s"])
    assert specs and [s.name for s in specs] == paper.GROUPS["s"]
    assert [s.name for s in model_bench.resolve_models(["x-p2"])] == paper.GROUPS["x-p2"]
    assert [s.name for s in model_bench.resolve_models(["all"])] == TABLE2
    assert set(TABLE2) == set(paper.PAPER)


def test_variant_brings_its_baseline_and_duplicates_collapse(capsys):
    specs = model_bench.resolve_models(["yolov5s-ema", "models/yolov5s-ema.yaml", "yolov5x-p2-ca"])
    assert [s.name for s in specs] == ["yolov5s", "yolov5s-ema", "yolov5x-p2", "yolov5x-p2-ca"]
    assert "adding yolov5s" in capsys.readouterr().out


def test_unknown_model_and_format_are_clear_errors(capsys):
    with pytest.raises(BenchmarkError, match="not a group"):
        model_bench.resolve_models(["yolov5q"])
    with pytest.raises(BenchmarkError, match="--formats tensorrt: unknown; choose from onnx, openvino, onnxruntime"):
        deploy.parse_formats("onnx,tensorrt")
    assert benchmarks.main(["--models", "nope.yaml"]) == 2
    assert benchmarks.main(["--half", "--models", "yolov5n"]) == 2
    err = capsys.readouterr().err
    assert "nope.yaml" in err and "--half needs a CUDA device" in err


def test_cpu_clock_needs_one_thread(monkeypatch):
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    with pytest.raises(BenchmarkError, match="--threads 1"):
        common.check_options(torch.device("cpu"), False, "cpu", {}, [], [])
    with pytest.raises(BenchmarkError, match="multiple of 32"):
        common.check_options(torch.device("cpu"), False, "wall", {"--imgsz": 100}, [], [])


@pytest.mark.parametrize("name, base", [("yolov5s-ema", "yolov5s"), ("yolov5x-p2-cbam", "yolov5x-p2"),
                                        ("yolov5s", "yolov5s"), ("yolov5n-se", "yolov5n"), ("custom", "custom"),
                                        ("yolov5s-ema [exp/best.pt]", "yolov5s")])
def test_baseline_name(name, base):
    assert paper.baseline_name(name) == base


# ----- table arithmetic -----------------------------------------------------------------------------


def test_paper_numbers_joined_on_name():
    row = paper.add_paper({"model": "yolov5s-ema", "params_m": 7.238685, "gflops": 16.75})
    assert row["paper_params_m"] == 7.24 and row["paper_gflops"] == 16.53
    assert row["d_params_m"] == pytest.approx(7.238685 - 7.24)
    assert row["d_gflops_pct"] == pytest.approx(100 * (16.75 / 16.53 - 1))
    assert (row["paper_map50"], row["paper_map50_95"]) == (57.8, 38.4)
    p2 = paper.add_paper({"model": "yolov5x-p2-ca", "params_m": 91.27863, "gflops": 315.6})
    assert p2["paper_params_m"] == 91.28 and p2["paper_gflops"] == 315.2
    other = paper.add_paper({"model": "yolov5n", "params_m": 1.87, "gflops": 4.5})
    assert other["paper_params_m"] is None and other["d_gflops_pct"] is None
    small = paper.add_paper({"model": "yolov5s", "params_m": 7.235, "gflops": 0.17}, imgsz=64)
    assert small["paper_params_m"] == 7.23 and small["paper_gflops"] is None and small["d_gflops_pct"] is None


def test_relative_latency_uses_the_group_baseline():
    rows = [{"model": m, "baseline": paper.baseline_name(m), "latency_ms": t} for m, t in
            [("yolov5s", 100.0), ("yolov5s-ema", 102.0), ("yolov5x-p2", 1000.0), ("yolov5x-p2-ema", 1030.0),
             ("yolov5m-ca", 50.0)]]
    report.add_relative(rows, "latency_ms", "rel_latency")
    rel = {r["model"]: r["rel_latency"] for r in rows}
    assert rel["yolov5s"] == 1.0 and rel["yolov5s-ema"] == pytest.approx(1.02)
    assert rel["yolov5x-p2"] == 1.0 and rel["yolov5x-p2-ema"] == pytest.approx(1.03)
    assert rel["yolov5m-ca"] is None  # its baseline was not measured


def test_columns_follow_the_data():
    rows = [paper.add_paper({"model": "yolov5s", "baseline": "yolov5s", "params_m": 7.2, "gflops": 16.6,
                             "latency_ms": 10.0, "rel_latency": 1.0, "peak_mem_mb": 50.0})]
    keys = [c.key for c in report.columns_for(rows)]
    assert keys[:4] == ["model", "params_m", "paper_params_m", "d_params_m"]
    assert "latency_ms" in keys and "rel_latency" in keys and "peak_mem_mb" in keys
    assert not any(k.startswith(("train", "map", "paper_map", "onnx")) for k in keys)
    rows[0].update(map50=50.0, map50_95=30.0, train_step_ms=5.0, train_img_s=1.0, rel_train=1.0)
    keys = [c.key for c in report.columns_for(rows)]
    for k in ("map50", "paper_map50", "map50_95", "paper_map50_95", "train_img_s", "rel_train"):
        assert k in keys
    table = report.markdown_table(rows, report.columns_for(rows))
    assert table.splitlines()[2].startswith("| yolov5s | 7.20 | 7.23 |")


def test_malloc_setting_is_reported(monkeypatch, capsys):
    monkeypatch.setattr(allocator, "_STATE", {"tuned": False})
    monkeypatch.setattr(allocator.sys, "platform", "darwin")  # not glibc: nothing to tune
    assert common.configure_malloc(stock=False) == "stock malloc"
    monkeypatch.setattr(allocator.sys, "platform", "linux")
    assert common.configure_malloc(stock=True) == "stock malloc"
    if platform.libc_ver()[0] == "glibc":
        assert common.configure_malloc(stock=False) == "malloc keeps freed memory"
        assert common.configure_malloc(stock=True) == "malloc keeps freed memory"  # cannot be undone in-process
        assert "needs a fresh process" in capsys.readouterr().out


def test_run_folders_increment_like_yolov5(tmp_path):
    assert common.save_dir_for(tmp_path, "exp") == tmp_path / "exp"
    assert common.save_dir_for(tmp_path, "exp") == tmp_path / "exp2"
    assert common.save_dir_for(tmp_path, "exp", exist_ok=True) == tmp_path / "exp"


# ----- interleaving ---------------------------------------------------------------------------------


def test_interleaved_round_robin_and_multiplicity():
    calls = []

    def fn(name, cost):
        def f():
            calls.append(name)
            t = time.perf_counter()
            while time.perf_counter() - t < cost:
                pass
        return f

    fns = {"slow": fn("slow", 0.004), "fast_a": fn("fast_a", 0.001), "fast_b": fn("fast_b", 0.001)}
    groups = {"slow": "slow", "fast_a": "fast", "fast_b": "fast"}
    times = timing.interleaved(fns, groups, repeats=2, warmup=1)
    mult = len(times["fast_a"]) // 2
    assert len(times["slow"]) == 2 and mult >= 2 and len(times["fast_b"]) == len(times["fast_a"])
    timed = calls[3:]  # after the warm-up round
    assert timed[:3] == ["slow", "fast_a", "fast_b"]  # round-robin within a round
    assert all(a != b for a, b in zip(timed, timed[1:]) if a.startswith("fast") and b.startswith("fast"))
    assert timing.multiplicities({}, {"a": "a"}) == {"a": 1}


# ----- end to end -----------------------------------------------------------------------------------


def test_run_tiny_writes_table_and_csv(tmp_path, capsys):
    rows = model_bench.run(["yolov5n"], imgsz=64, repeats=1, warmup=0, project=tmp_path, plots=True, stock_malloc=True)
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


def test_run_with_training_step(tmp_path):
    rows = model_bench.run(["yolov5n"], imgsz=64, repeats=1, warmup=0, stock_malloc=True,
                           project=tmp_path, train=True, train_batch_size=2, train_imgsz=64, memory=False)
    r = rows[0]
    assert r["train_step_ms"] > 0 and r["train_img_s"] == pytest.approx(2 / r["train_step_ms"] * 1e3)
    assert r["rel_train"] == 1.0 and "peak_mem_mb" not in r


def test_formats_expand_to_deployment_variants():
    assert deploy.parse_formats("onnx") == ["onnxruntime", "onnxruntime-int8"]
    assert deploy.parse_formats(["openvino-int8", "onnx,openvino-int8"])[0] == "openvino-int8"  # deduplicated, in order
    assert set(deploy.parse_formats("onnx,openvino")) == set(deploy.default_variants()) - {"pytorch"}


def test_modules_tiny(tmp_path):
    rows = module_bench.run_modules(imgsz=64, repeats=1, warmup=0, project=tmp_path, stock_malloc=True)
    sites = module_bench.module_sites(64)
    assert len(rows) == len(sites)
    assert {r["module"] for r in rows} == set(catalogue_names()) and len(catalogue_names()) == 35
    for r in rows:
        assert r["fwd_ms"] > 0 and r["fwd_bwd_ms"] > 0 and r["params"] >= 0 and r["gflops"] >= 0
    assert {r["note"] for r in rows if r["module"] in ("SK", "BAM", "CoT")} == {"fwd+bwd with BatchNorm in eval mode"}
    assert {r["shape"] for r in rows if r["module"] == "EMA"} == {"1x256x4x4", "1x512x2x2", "1x640x4x4", "1x320x8x8",
                                                                 "1x320x16x16"}
    assert (tmp_path / "modules" / "modules.csv").is_file()


def test_module_gflops_count_every_matrix_product():
    """DANet's position attention at 1x64x8x8, by hand: three 1x1 convs and two products over the 64 pixels."""
    from models.attention import PAM

    hw, c, c8 = 64, 64, 8
    expected = 2 * hw * (c * c8 * 2 + c * c) + 2 * hw * hw * c8 + 2 * c * hw * hw
    assert forward_gflops(PAM(64), torch.zeros(1, 64, 8, 8)) * 1e9 == expected
    ema = module_cost("EMA", 256, 4)  # 32 groups of 8 channels: 1x1 and 3x3 convs, then the two cross-spatial products
    convs = 2 * 32 * (8 * 8 * (4 + 4) + 8 * 8 * 9 * 16)
    assert ema["gflops"] * 1e9 == convs + 2 * 32 * 2 * 8 * 16 and ema["params"] == 672 and ema["trains"]
    assert not module_cost("SK", 256, 4)["trains"] and module_cost("SK", 256, 4, batch=2)["trains"]
