"""Data YAMLs: what their ``download:`` step may be, preparing a dataset before use, and checking it has labels.

A data YAML's ``download:`` (used only when the YAML's ``val`` images are missing) is one of:

* a URL or a list of URLs (http(s), ftp, ``file://`` or a local archive path): fetched and unpacked by
  ``utils.dataprep.download`` into the folder that holds the dataset root (``path``'s parent), as YOLOv5 does;
* a preparer of this project, named from ``utils.dataprep.PREPARERS``: ``download: {prepare: coco}``, options as
  further keys (``download: {prepare: shapes, n_train: 400}``). A YAML cannot name any other function;
* a script (Python, or ``bash ...``), which the engine would run with the user's permissions: refused with a
  ``DataScriptError`` unless the user passes ``--allow-data-scripts`` (``allow_scripts=True``).

``prepare_data`` does this before the engine sees the YAML (train.py, val.py, export.py ``--int8``), and
``engine_check_det_dataset`` wraps the engine's ``check_det_dataset`` (installed by ``utils/engine.py``) so that the
engine itself never runs a YAML's download: it prepares with our code, then calls the engine with
``autodownload=False``.
"""

from __future__ import annotations

import inspect
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml

ALLOW_FLAG = "--allow-data-scripts"
_URL_SCHEMES = ("http", "https", "ftp", "file")
_allowed: set[str] = set()  # resolved YAML files whose scripts the user allowed in this process


class DataYAMLError(ValueError):
    """A data YAML that cannot be used as it is; the message names the file, the key and what to do."""


class DataScriptError(DataYAMLError):
    """A data YAML whose ``download:`` is a script, and the user did not allow scripts."""


# --------------------------------------------------------------------------------------------------
# The download step
# --------------------------------------------------------------------------------------------------
def _is_url(text: Any) -> bool:
    """One URL or local archive path: a single word with a URL scheme, or a name ending in an archive suffix."""
    from utils.dataprep import is_archive

    if not isinstance(text, str) or not text.strip() or len(text.strip().split()) != 1:
        return False
    text = text.strip()
    return urlparse(text).scheme.lower() in _URL_SCHEMES or is_archive(text)


def download_step(data: dict, file: str | Path) -> tuple[str, Any]:
    """What a data YAML's ``download:`` is: ("none", None), ("urls", [url, ...]), ("prepare", (function, options))
    or ("script", text). A malformed step raises ``DataYAMLError`` naming the file."""
    from utils.dataprep import PREPARERS

    step = data.get("download")
    if step is None or (isinstance(step, str) and not step.strip()):
        return "none", None
    if isinstance(step, str):
        return ("urls", [step.strip()]) if _is_url(step) else ("script", step)
    if isinstance(step, list):
        bad = [i for i, u in enumerate(step, 1) if not _is_url(u)]
        if bad:
            raise DataYAMLError(f"{file}: 'download:' item {bad[0]} ({step[bad[0] - 1]!r}) is not a URL; a list holds "
                                f"URLs (http(s), ftp, file://) or archive paths")
        return "urls", [u.strip() for u in step]
    if isinstance(step, dict):
        known = ", ".join(PREPARERS)
        if "prepare" not in step:
            raise DataYAMLError(f"{file}: 'download:' as a mapping needs 'prepare:', the name of one of this "
                                f"project's preparers ({known})")
        options = {k: v for k, v in step.items() if k != "prepare"}
        name = step["prepare"]
        if not isinstance(name, str) or name not in PREPARERS:
            raise DataYAMLError(f"{file}: 'download: {{prepare: {name}}}' names no preparer of this project; "
                                f"known: {known}")
        fn = PREPARERS[name]
        accepted = [p for p in inspect.signature(fn).parameters if p != "root"]
        unknown = sorted(set(map(str, options)) - set(accepted))
        if unknown:
            raise DataYAMLError(f"{file}: preparer '{name}' takes no option {', '.join(unknown)}; "
                                f"its options: {', '.join(accepted) or 'none'}")
        return "prepare", (fn, options)
    raise DataYAMLError(f"{file}: 'download:' must be a URL, a list of URLs or {{prepare: <name>}}, "
                        f"not {type(step).__name__}")


def refuse_script(file: str | Path, script: str) -> DataScriptError:
    """The error for a script the user did not allow."""
    what = "a bash command" if script.lstrip().startswith("bash ") else "Python code"
    return DataScriptError(f"{file}: its 'download:' is a script ({what}), which this project does not run; give a "
                           f"URL, a list of URLs or 'download: {{prepare: <name>}}', or pass {ALLOW_FLAG} to run it")


def allow_scripts_of(file: str | Path) -> None:
    """Let this process run the download script of ``file`` (the user passed ``--allow-data-scripts``)."""
    _allowed.add(str(Path(file).resolve()))


def scripts_allowed(file: str | Path) -> bool:
    return str(Path(file).resolve()) in _allowed


# --------------------------------------------------------------------------------------------------
# Paths, as the engine resolves them
# --------------------------------------------------------------------------------------------------
def read_data_yaml(file: str | Path) -> dict | None:
    """The YAML's mapping (safe loader), or None when it is no mapping (the engine reports that)."""
    try:
        data = yaml.safe_load(Path(file).read_text(encoding="utf-8-sig"))
    except yaml.YAMLError as e:
        raise DataYAMLError(f"{file}: not valid YAML ({str(e).splitlines()[0]})") from None
    return data if isinstance(data, dict) else None


def dataset_root(data: dict, file: str | Path) -> Path:
    """The dataset folder of a YAML: ``path`` (or the YAML's folder); a relative one that does not exist from the
    working directory is taken inside the engine's datasets directory, as the engine does."""
    import ultralytics.data.utils as data_utils

    root = Path(data.get("path") or Path(file).parent)
    if not root.exists() and not root.is_absolute():
        root = (Path(data_utils.DATASETS_DIR) / root).resolve()
    return root


def split_paths(data: dict, root: Path, split: str) -> list[Path]:
    """The folders or list files of one split (``train``, ``val``...), resolved against the dataset root."""
    entries = data.get(split)
    if not entries:
        return []
    out = []
    for e in entries if isinstance(entries, list) else [entries]:
        p = (root / str(e)).resolve()
        if not p.exists() and str(e).startswith("../"):
            p = (root / str(e)[3:]).resolve()
        out.append(p)
    return out


# --------------------------------------------------------------------------------------------------
# Preparing
# --------------------------------------------------------------------------------------------------
def _run_script(script: str, data: dict, file: Path, root: Path) -> None:
    """Run an allowed script the way the engine would: ``bash ...`` as a command, else Python with ``yaml``."""
    from ultralytics.utils import LOGGER

    LOGGER.warning(f"{file}: running its download script ({ALLOW_FLAG})")
    if script.lstrip().startswith("bash "):
        subprocess.run(script.split(), check=True)
        return
    resolved = dict(data, path=root, yaml_file=str(file))
    for k in ("train", "val", "test", "minival"):
        if resolved.get(k):
            paths = [str(p) for p in split_paths(data, root, k)]
            resolved[k] = paths if isinstance(data[k], list) else paths[0]
    exec(compile(script, str(file), "exec"), {"yaml": resolved})  # noqa: S102 - the user allowed it


def prepare(file: str | Path, split: str = "val", allow_scripts: bool | None = None) -> None:
    """Fetch or generate the dataset of a data YAML when its ``split`` (default ``val``) images are missing.

    ``allow_scripts`` None: as allowed for this file by ``allow_scripts_of``. A script not allowed raises
    ``DataScriptError`` (only when it would run: a dataset that is present needs no download).
    """
    from ultralytics.utils import LOGGER

    file = Path(file)
    data = read_data_yaml(file)
    if data is None:
        return
    kind, step = download_step(data, file)  # a malformed step is reported even when nothing is missing
    root = dataset_root(data, file)
    wanted = split_paths(data, root, split or "val")
    missing = [p for p in wanted if not p.exists()]
    if not missing or kind == "none":
        return
    allowed = scripts_allowed(file) if allow_scripts is None else allow_scripts
    if kind == "script" and not allowed:
        raise refuse_script(file, step)
    LOGGER.info(f"{file}: {missing[0]} not found, preparing the dataset in {root}")
    if kind == "urls":
        from utils.dataprep import DownloadError, download

        try:
            download(step, dir=root.parent, delete=True, threads=min(len(step), 3))
        except DownloadError as e:
            raise DataYAMLError(f"{file}: 'download:' failed: {e}") from None
    elif kind == "prepare":
        fn, options = step
        fn(root, **options)
    else:
        _run_script(step, data, file, root)
    still = [p for p in wanted if not p.exists()]
    if still:
        raise DataYAMLError(f"{file}: {still[0]} still not found after its 'download:' step; check the YAML's "
                            f"'path:' ({root}) and '{split or 'val'}:' against what the download unpacked")


def engine_check_det_dataset(dataset: Any, autodownload: bool = True, split: str = "", *,
                             engine_check: Callable[..., dict]) -> dict:
    """The engine's ``check_det_dataset`` that never runs a YAML's download itself: a YAML file is prepared by
    ``prepare`` (our steps; a script only when allowed), then checked by the engine with ``autodownload=False``."""
    file = Path(str(dataset))
    if autodownload and file.suffix.lower() in (".yaml", ".yml") and "://" not in str(dataset):
        if not file.is_file():  # a bare name: where the engine finds it (its own cfg/datasets/ YAMLs...)
            from ultralytics.utils.checks import check_file

            file = Path(check_file(str(dataset), hard=False) or file)
        if file.is_file():
            prepare(file, split=split or "val")
    return engine_check(dataset, autodownload=False, split=split)


# --------------------------------------------------------------------------------------------------
# Labels
# --------------------------------------------------------------------------------------------------
def _split_images(paths: list[Path]) -> Iterator[Path]:
    """Image files of a split, lazily: folders searched recursively, ``.txt`` lists read as the engine reads them."""
    from ultralytics.data.utils import IMG_FORMATS

    for p in paths:
        if p.is_dir():
            yield from (f for f in sorted(p.rglob("*.*")) if f.suffix[1:].lower() in IMG_FORMATS)
        elif p.is_file() and p.suffix.lower() == ".txt":
            parent = str(p.parent) + os.sep
            for line in p.read_text(encoding="utf-8-sig", errors="replace").splitlines():
                line = line.strip()
                if line and line.rsplit(".", 1)[-1].lower() in IMG_FORMATS:
                    yield Path(line.replace("./", parent, 1) if line.startswith("./") else line)
        elif p.is_file() and p.suffix[1:].lower() in IMG_FORMATS:
            yield p


def check_labels(file: str | Path, split: str) -> None:
    """A split whose images have no label file at all (no ``labels/`` folder next to ``images/``, or no ``.txt`` in
    it for any image) raises ``DataYAMLError`` naming the images folder and the labels folder expected."""
    from ultralytics.data.utils import img2label_paths

    data = read_data_yaml(file)
    if data is None:
        return
    paths = split_paths(data, dataset_root(data, file), split)
    if not paths or not all(p.exists() for p in paths):
        return  # missing images: the engine names the path
    image_dirs: list[Path] = []
    label_dirs: list[Path] = []
    for image in _split_images(paths):
        label = Path(img2label_paths([str(image)])[0])
        if label.is_file():
            return
        if image.parent not in image_dirs:
            image_dirs.append(image.parent)
            label_dirs.append(label.parent)
    if not image_dirs:
        return  # no images: the engine says so

    def shown(dirs: list[Path]) -> str:
        return str(dirs[0]) + (f" (and {len(dirs) - 1} more folders)" if len(dirs) > 1 else "")

    folder = "no labels folder" if not any(d.is_dir() for d in label_dirs) else "no label files"
    raise DataYAMLError(f"{file}: the {split} images in {shown(image_dirs)} have {folder}: expected one YOLO .txt per "
                        f"image in {shown(label_dirs)} (the YOLOv5 layout: images/ -> labels/)")


def prepare_data(file: str | Path, allow_scripts: bool = False, split: str = "val",
                 labels: tuple[str, ...] = ()) -> str:
    """Before the engine sees ``file`` (a resolved data YAML): check its download step, prepare the dataset if its
    ``split`` images are missing, then check that the ``labels`` splits have labels. Returns ``file`` as a string.

    ``allow_scripts`` (``--allow-data-scripts``) lets the YAML's script run, here and in the engine's checks later in
    this process; without it a script that would run raises ``DataScriptError``.
    """
    if allow_scripts:
        allow_scripts_of(file)
    prepare(file, split=split)  # allowed by this call or an earlier one in this process
    for s in labels:
        check_labels(file, s)
    return str(file)
