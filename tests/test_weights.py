"""Weights by name or URL (utils/weights.py), against an HTTP server on 127.0.0.1 standing in for GitHub's releases:
official names and URLs are downloaded into the current folder once, opened by the restricted loader, and a failed
download is one ERROR line naming the URL and where to put the file."""

from __future__ import annotations

import http.server
import threading
import zipfile
from collections import Counter
from copy import deepcopy
from pathlib import Path

import pytest
import torch
import yaml

import detect
import train
import utils.weights as weights
import val
from tests.helpers import SHAPES_NAMES, build, shapes_data
from tests.test_checkpoint import Evil, write_original_checkpoint
from utils.weights import OFFICIAL_WEIGHTS, RELEASE_URL, as_url, resolve_weights

ROOT = Path(__file__).resolve().parents[1]
NAMES = list(SHAPES_NAMES.values())


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    return shapes_data(tmp_path_factory.mktemp("data"), n_train=16, n_val=8, imgsz=128)


@pytest.fixture(scope="module")
def server(tmp_path_factory, shapes):
    """``(base URL, hits)``: ``/rel/yolov5n.pt`` an official-layout checkpoint, ``/ours.pt`` one of ours,
    ``/short.pt`` cut short (Content-Length larger than the body), ``/evil.pt`` a pickle that would run a command,
    ``/mini.zip`` a zipped dataset; anything else is a 404. ``hits`` counts the requests per path."""
    tmp = tmp_path_factory.mktemp("www")
    model = build("yolov5n.yaml", seed=1, nc=len(NAMES))
    write_original_checkpoint(tmp / "official.pt", model, "v7.0", names=NAMES)
    ours = deepcopy(model)
    ours.names = dict(enumerate(NAMES))
    torch.save({"epoch": -1, "model": None, "ema": ours.half(), "train_args": {}}, tmp / "ours.pt")
    marker = tmp / "pwned"
    torch.save(Evil(marker), tmp / "evil.pt")
    with zipfile.ZipFile(tmp / "mini.zip", "w") as zf:
        for f in (shapes.parent / "shapes").rglob("*"):
            if f.is_file() and "cache" not in f.name:
                zf.write(f, "mini/" + f.relative_to(shapes.parent / "shapes").as_posix())
    files = {"/rel/yolov5n.pt": tmp / "official.pt", "/ours.pt": tmp / "ours.pt", "/evil.pt": tmp / "evil.pt",
             "/mini.zip": tmp / "mini.zip"}
    hits: Counter = Counter()

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def do_GET(self) -> None:
            hits[self.path] += 1
            if self.path == "/short.pt":
                body = (tmp / "ours.pt").read_bytes()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[: len(body) // 3])
                return
            if self.path not in files:
                self.send_error(404)
                return
            body = files[self.path].read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", hits, marker
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def release(server, tmp_path, monkeypatch):
    """The official release URL pointed at the local server, the current folder an empty ``tmp_path/cwd``."""
    base, hits, marker = server
    monkeypatch.setenv(weights.URL_ENV, f"{base}/rel")
    monkeypatch.setattr(weights, "RETRIES", 2)  # a retry is tried, without waiting for it
    monkeypatch.setattr("utils.dataprep.time.sleep", lambda s: None)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    return base, hits, marker, cwd


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("ERROR")]


def test_names_and_urls():
    assert {"yolov5n.pt", "yolov5x.pt", "yolov5s6.pt", "yolov5x6.pt", "yolov5m-cls.pt"} <= OFFICIAL_WEIGHTS
    assert len(OFFICIAL_WEIGHTS) == 15 and RELEASE_URL.endswith("/ultralytics/yolov5/releases/download/v7.0")
    url = "https://github.com/ultralytics/yolov5/releases/download/v7.0/yolov5s.pt"
    assert as_url(url) == as_url(str(Path(url))) == url  # Path() collapses '//' after the scheme: repaired
    assert as_url("runs/train/exp/weights/best.pt") is None and as_url("") is None
    assert resolve_weights("") == "" and resolve_weights("nothing-official.pt") == "nothing-official.pt"
    assert resolve_weights(ROOT / "README.md") == ROOT / "README.md"  # a file on disk is used as it is


def test_val_downloads_official_name_into_cwd_once(release, shapes, tmp_path, capsys):
    base, hits, _, cwd = release
    argv = ["--weights", "yolov5n.pt", "--data", str(shapes), "--img", "128", "--project", str(tmp_path / "runs"),
            "--noplots"]
    assert val.main(argv) == 0
    assert (cwd / "yolov5n.pt").is_file() and not list(cwd.glob("*.part")) and hits["/rel/yolov5n.pt"] == 1
    assert val.main(argv) == 0  # found in the current folder: not downloaded again
    assert hits["/rel/yolov5n.pt"] == 1
    assert "Traceback" not in capsys.readouterr().err


def test_detect_url_downloads_under_its_name(release, shapes, tmp_path):
    base, hits, _, cwd = release
    image = next((shapes.parent / "shapes" / "images" / "val").iterdir())
    save_dir = detect.run(weights=f"{base}/ours.pt", source=str(image), imgsz=[128], project=str(tmp_path / "det"),
                          nosave=True, save_txt=True)
    assert save_dir.is_dir() and (cwd / "ours.pt").is_file() and hits["/ours.pt"] == 1
    assert resolve_weights(Path(f"{base}/ours.pt")) == str(cwd / "ours.pt")  # a Path()-mangled URL: same file
    assert hits["/ours.pt"] == 1


def test_train_transfers_from_official_name(release, shapes, tmp_path, log_records):
    base, hits, _, cwd = release
    argv = ["--weights", "yolov5n.pt", "--cfg", "models/yolov5n.yaml", "--data", str(shapes), "--imgsz", "128",
            "--batch-size", "8", "--epochs", "1", "--hyp", "data/hyps/hyp.shapes.yaml", "--project",
            str(tmp_path / "runs"), "--noplots", "--noautoanchor"]
    train.run(**vars(train.parse_opt(argv)))
    assert (cwd / "yolov5n.pt").is_file() and hits["/rel/yolov5n.pt"] >= 1
    transferred = [m for _, m in log_records if m.startswith("Transferred ")]
    assert transferred and "yolov5n.pt" in transferred[0], transferred


@pytest.mark.parametrize("kind", ["truncated", "404", "refused"])
def test_failed_download_is_one_error_line(release, shapes, tmp_path, cli_error, kind, monkeypatch):
    base, hits, _, cwd = release
    if kind == "refused":  # offline: nothing listens there
        monkeypatch.setenv(weights.URL_ENV, "http://127.0.0.1:9/rel")
    w = {"truncated": f"{base}/short.pt", "404": "yolov5s.pt", "refused": "yolov5x.pt"}[kind]
    url = as_url(w) or f"{weights.release_url()}/{w}"
    err = cli_error(val.main, ["--weights", w, "--data", str(shapes), "--img", "128", "--project", str(tmp_path)])
    lines = error_lines(err)
    name = Path(url).name
    assert len(lines) == 1 and f"could not download {url} (" in lines[0] and str(cwd / name) in lines[0], err
    why = {"truncated": "incomplete transfer", "404": "404", "refused": "Connection refused"}[kind]
    assert why in lines[0], lines[0]
    assert list(cwd.iterdir()) == []  # no half file, no .part left behind
    if kind == "truncated":
        assert hits["/short.pt"] == 2  # retried once


def test_malicious_pickle_by_url_runs_nothing(release, shapes, tmp_path, cli_error):
    base, _, marker, cwd = release
    err = cli_error(val.main, ["--weights", f"{base}/evil.pt", "--data", str(shapes), "--img", "128", "--project",
                               str(tmp_path)])
    assert len(error_lines(err)) == 1 and "evil.pt" in err and not marker.exists()
    assert (cwd / "evil.pt").is_file()  # downloaded, then refused by the restricted loader


def test_hub_pretrained_downloads_official_weights(release):
    from utils.hub import find_weights

    _, hits, _, cwd = release
    assert find_weights("yolov5n") == cwd / "yolov5n.pt" and (cwd / "yolov5n.pt").is_file()
    with pytest.raises(FileNotFoundError, match="not downloaded"):
        find_weights("yolov5x_p2_ema")  # no official weights of ours: not downloaded


def test_coco128_like_yaml_downloads_its_zip(release, tmp_path):
    from utils.datayaml import download_step, prepare

    base, hits, _, _ = release
    official = yaml.safe_load((ROOT / "data" / "coco128.yaml").read_text())
    assert download_step(official, "coco128.yaml") == (
        "urls", ["https://github.com/ultralytics/assets/releases/download/v0.0.0/coco128.zip"])
    assert len(official["names"]) == 80 and official["val"] == official["train"] == "images/train2017"
    f = tmp_path / "mini.yaml"
    f.write_text(yaml.safe_dump({"path": str(tmp_path / "datasets" / "mini"), "train": "images/train",
                                 "val": "images/val", "names": SHAPES_NAMES, "download": f"{base}/mini.zip"}))
    prepare(f)
    assert len(list((tmp_path / "datasets" / "mini" / "images" / "val").iterdir())) == 8 and hits["/mini.zip"] == 1


@pytest.mark.parametrize("script", ["detect", "export", "classify/val", "classify/predict", "classify/train"])
def test_every_entry_point_resolves_its_weights(release, cli_error, script):
    import classify.predict
    import classify.train
    import classify.val
    import export

    main = {"detect": detect.main, "export": export.main, "classify/val": classify.val.main,
            "classify/predict": classify.predict.main, "classify/train": classify.train.main}[script]
    flag = "--model" if script == "classify/train" else "--weights"
    name = "yolov5s-cls.pt" if script.startswith("classify") else "yolov5m6.pt"
    source = ["--source", str(ROOT / "data" / "images")] if "predict" in script or script == "detect" else []
    lines = error_lines(cli_error(main, [flag, name, *source]))  # not on the server: a 404
    assert len(lines) == 1 and f"could not download {release[0]}/rel/{name} (HTTP Error 404" in lines[0], lines
