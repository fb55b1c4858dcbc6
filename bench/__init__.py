"""The benchmark behind ``benchmarks.py``: the EMA paper's Table 2 models measured side by side with the paper.

- ``paper``: the paper's Table 2 figures, the model groups, where the attention modules sit
- ``common``: device, run folders, allocator, the machine's description, option checks
- ``timing``: the interleaved round-robin timer and peak memory
- ``report``: table columns, Markdown, CSV and plots
- ``deploy``: runtime variants (ONNX Runtime, OpenVINO fp32/bf16/INT8): export, runners, mAP
- ``model_bench``: the model table (``python benchmarks.py``)
- ``module_bench``: the attention modules alone (``python benchmarks.py --modules``)
"""


class BenchmarkError(ValueError):
    """A benchmark that cannot run as asked (unknown model, bad flag combination...): one clear message."""


def log(msg: str = "") -> None:
    print(msg, flush=True)
