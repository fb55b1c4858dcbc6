"""Attention modules: each equals an independent re-statement of its paper's formula (float64, forward and backward,
13x17, batch 1 and 3), runs under CPU autocast, traces size-independently, and rejects channel counts that do not
fit its grouping with a clear ValueError."""

import math
from functools import partial

import pytest
import torch

from models.attention import (
    ATTENTION,
    BAM,
    CA,
    CAA,
    CAM,
    CBAM,
    CPCA,
    ECA,
    ELA,
    EMA,
    GAM,
    GC,
    GE,
    LSKA,
    MHSA,
    MLCA,
    NAM,
    PAM,
    S2,
    SA,
    SE,
    SGE,
    SK,
    SOCA,
    BoT,
    CoT,
    CrissCross,
    DANet,
    DoubleAttention,
    EffectiveSE,
    LSKBlock,
    ParNet,
    PolarizedSA,
    SequentialPolarizedSA,
    SimAM,
    Triplet,
    build_attention,
    eca_kernel_size,
)
from tests import attention_reference as ref
from tests.helpers import randomize

torch.manual_seed(0)


# (id, builder taking the channel count, reference) -- every class of the registry at least once
CASES = [
    ("EMA", partial(EMA, factor=8), ref.ema),
    ("CA", CA, ref.ca),
    ("CBAM", partial(CBAM, ratio=8), ref.cbam),
    ("SA", partial(SA, groups=8), ref.sa),
    ("ECA", ECA, ref.eca),
    ("SE", partial(SE, ratio=8), ref.se),
    ("EffectiveSE", EffectiveSE, ref.effective_se),
    ("NAM", NAM, ref.nam),
    ("SimAM", SimAM, ref.simam),
    ("SK", partial(SK, groups=8), ref.sk),
    ("SK-3", partial(SK, branches=3, groups=4, min_dim=8), ref.sk),
    ("Triplet", Triplet, ref.triplet),
    ("GAM", GAM, ref.gam),
    ("GC", partial(GC, ratio=8), ref.gc),
    ("GC-mul", partial(GC, ratio=8, fusion="mul"), ref.gc),
    ("SGE", partial(SGE, groups=8), ref.sge),
    ("BAM", partial(BAM, ratio=8), ref.bam),
    ("GE", GE, ref.ge),
    ("GE-extent4", partial(GE, extent=4), ref.ge),
    ("GE-theta4-plus", partial(GE, extent=4, extra_params=True, mlp=True, ratio=8), ref.ge),
    ("PolarizedSA", PolarizedSA, ref.polarized),
    ("SequentialPolarizedSA", SequentialPolarizedSA, ref.polarized_sequential),
    ("S2", S2, ref.s2),
    ("ParNet", ParNet, ref.parnet),
    ("CrissCross", CrissCross, ref.criss_cross),
    ("DoubleAttention", DoubleAttention, ref.double_attention),
    ("CoT", CoT, ref.cot),
    ("MHSA", partial(MHSA, max_offset=5), ref.mhsa),  # offsets beyond 5 clipped at 13x17
    ("BoT", partial(BoT, e=0.5, max_offset=5), ref.bot),
    ("ELA", ELA, ref.ela),
    ("ELA-S", partial(ELA, phi="S"), ref.ela),
    ("CPCA", CPCA, ref.cpca),
    ("MLCA", MLCA, ref.mlca),
    ("LSKA", LSKA, ref.lska),
    ("LSKA-23", partial(LSKA, k_size=23), ref.lska),
    ("LSKBlock", LSKBlock, ref.lsk_block),
    ("CAA", CAA, ref.caa),
    ("SOCA", SOCA, ref.soca),
    ("PAM", PAM, ref.pam),
    ("CAM", CAM, ref.cam),
    ("DANet", DANet, ref.danet),
]
CHANNELS = 32
IDS = [c[0] for c in CASES]


def test_every_registered_module_has_a_reference_case():
    covered = {type(build(CHANNELS)) for _, build, _ in CASES}
    assert set(ATTENTION.values()) <= covered


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("name, build, reference", CASES, ids=IDS)
def test_matches_reference_formula_forward_and_backward(name, build, reference, batch):
    m = randomize(build(CHANNELS), fan_in=True).double()
    g = torch.Generator().manual_seed(batch)
    x = torch.randn(batch, CHANNELS, 13, 17, dtype=torch.float64, generator=g).requires_grad_(True)
    y, r = m(x), reference(m, x)
    assert y.shape == x.shape
    assert torch.allclose(y, r, atol=1e-10, rtol=1e-8), (y - r).abs().max()
    weights = torch.randn(y.shape, dtype=torch.float64, generator=g)
    inputs = [x, *m.parameters()]
    grads = torch.autograd.grad((y * weights).sum(), inputs, allow_unused=True)
    grads_ref = torch.autograd.grad((r * weights).sum(), inputs, allow_unused=True)
    for a, b in zip(grads, grads_ref):
        assert (a is None) == (b is None)
        if a is not None:
            assert torch.allclose(a, b, atol=1e-9, rtol=1e-7), (a - b).abs().max()


@pytest.mark.parametrize("name, build, reference", CASES, ids=IDS)
def test_trains_under_cpu_autocast(name, build, reference):
    """bf16 autocast forward and backward in training mode: finite, and close to float32 in eval mode."""
    m = randomize(build(CHANNELS), fan_in=True)
    x = torch.randn(3, CHANNELS, 13, 17, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y32 = m(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y16 = m(x)
        m.train()
        xg = x.clone().requires_grad_(True)
        m(xg).float().square().mean().backward()
    assert torch.isfinite(xg.grad).all() and xg.grad.abs().sum() > 0
    assert all(torch.isfinite(p.grad).all() for p in m.parameters() if p.grad is not None)
    err = (y16.float() - y32).abs().max() / y32.abs().max()
    assert err < 0.03, f"{name}: bf16 relative error {err:.3f}"


@pytest.mark.parametrize("name, build, reference", CASES, ids=IDS)
def test_trace_at_one_size_runs_at_another(name, build, reference):
    """No adaptive pooling with None sizes and no Python-side shape branching: a trace at one size runs at others."""
    m = randomize(build(CHANNELS), fan_in=True)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        traced = torch.jit.trace(m, torch.randn(1, CHANNELS, 8, 8, generator=g), check_trace=False)
        for shape in [(2, CHANNELS, 11, 5), (1, CHANNELS, 1, 1), (1, CHANNELS, 40, 24)]:
            x = torch.randn(*shape, generator=g)
            y = m(x)
            assert y.shape == x.shape and torch.isfinite(y).all()
            assert torch.allclose(traced(x), y, atol=1e-5), shape
    assert not any("Adaptive" in type(s).__name__ for s in m.modules())


@pytest.mark.parametrize("cls, c, kwargs, words", [
    (EMA, 48, {}, "48 input channels"),
    (EMA, 16, {}, "multiple of 32"),
    (SA, 96, {}, "multiple of 128"),
    (CBAM, 8, {}, "ratio"),
    (SE, 8, {}, "ratio"),
    (ECA, 64, {"k_size": 4}, "odd"),
    (SK, 48, {}, "multiple of 32"),
    (SK, 64, {"branches": 1}, "at least 2"),
    (Triplet, 64, {"kernel_size": 6}, "odd"),
    (GAM, 2, {}, "rate"),
    (GC, 8, {}, "ratio"),
    (GC, 64, {"fusion": "concat"}, "fusion"),
    (SGE, 96, {}, "multiple of 64"),
    (BAM, 8, {}, "ratio"),
    (GE, 64, {"extent": 3}, "power of two"),
    (GE, 64, {"extra_params": True}, "fixed feature size"),
    (PolarizedSA, 33, {}, "multiple of 2"),
    (SequentialPolarizedSA, 33, {}, "SequentialPolarizedSA"),
    (S2, 30, {}, "multiple of 4"),
    (CrissCross, 4, {}, "ratio"),
    (DoubleAttention, 2, {}, "reduction"),
    (CoT, 36, {}, "multiple of 8"),
    (MHSA, 30, {}, "heads=4"),
    (BoT, 60, {}, "inner width is 15"),
    (ELA, 24, {}, "16 GroupNorm groups"),
    (ELA, 64, {"phi": "X"}, "unknown version"),
    (CPCA, 2, {}, "ratio"),
    (LSKA, 64, {"k_size": 9}, "k_size must be one of 7, 11, 23"),
    (LSKBlock, 33, {}, "multiple of 2"),
    (CAA, 64, {"h_kernel_size": 10}, "odd"),
    (SOCA, 4, {}, "ratio"),
    (PAM, 4, {}, "ratio"),
    (DANet, 4, {}, "ratio"),
])
def test_bad_channels_raise_clear_error(cls, c, kwargs, words):
    with pytest.raises(ValueError, match=words):
        cls(c, **kwargs)


def test_registry_picks_modules_by_name():
    assert isinstance(build_attention("ema", 64, 8), EMA)
    assert isinstance(build_attention("CoordAtt", 64), CA)
    assert isinstance(build_attention("simam", 64), SimAM) and isinstance(build_attention("A2", 64), DoubleAttention)
    assert ATTENTION["ShuffleAttention"] is SA and ATTENTION["GAM_Attention"] is GAM
    assert build_attention("GE", 64, extent=8).extent == 8
    with pytest.raises(ValueError, match="unknown attention module 'NotAThing'; known modules: .*SimAM"):
        build_attention("NotAThing", 64)


def test_every_module_says_whether_it_gates_its_input():
    """``gate`` decides whether detect.py draws a heat map: True exactly when the output is the input times weights."""
    for cls in set(ATTENTION.values()):
        assert isinstance(cls.gate, bool), cls.__name__
    not_gates = {SK, S2, ParNet, CrissCross, DoubleAttention, CoT, MHSA, BoT, PAM, CAM, DANet, GC}
    assert {cls for cls in set(ATTENTION.values()) if not cls.gate} == not_gates
    assert GC(64, fusion="mul").gate and not GC(64).gate


def test_gc_and_self_attention_start_as_identity():
    """GC (add fusion), CrissCross, PAM, CAM and DANet start as the identity, as in their papers' code."""
    x = torch.randn(2, 64, 9, 7)
    for m in (GC(64), CrissCross(64), PAM(64), CAM(64), DANet(64)):
        with torch.no_grad():
            assert torch.allclose(m.eval()(x), x), type(m).__name__


@pytest.mark.parametrize("c, expected", [(256, 672), (512, 2624)])
def test_ema_parameter_formula(c, expected):
    g = 32
    cg = c // g
    assert (cg * cg + cg) + (9 * cg * cg + cg) + 2 * cg == expected
    assert sum(p.numel() for p in EMA(c).parameters()) == expected


def test_default_options_match_table2():
    assert EMA(256).groups == 32
    assert CA(256).conv1.out_channels == 8 and CA(512).conv1.out_channels == 16 and CA(64).conv1.out_channels == 8
    cbam = CBAM(256)
    assert cbam.channel_attention.fc1.out_channels == 16 and cbam.spatial_attention.conv1.kernel_size == (7, 7)
    assert SA(256).groups == 64 and sum(p.numel() for p in SA(256).parameters()) == 6 * 256 // 128
    assert ECA(256).conv.kernel_size == (5,) and ECA(64).conv.kernel_size == (3,)


@pytest.mark.parametrize("c, k", [(16, 3), (32, 3), (64, 3), (128, 5), (256, 5), (512, 5), (1024, 5), (2048, 7)])
def test_eca_adaptive_kernel(c, k):
    t = int(abs(math.log2(c) + 1) / 2)
    assert eca_kernel_size(c) == k == (t if t % 2 else t + 1)


def test_ema_groups_independent():
    """Changing one group's channels must not change another group's output (groups are folded into the batch)."""
    m = EMA(64, factor=8).eval()
    x = torch.randn(1, 64, 6, 6)
    x2 = x.clone()
    x2[:, :8] += 1.0
    with torch.no_grad():
        d = (m(x) - m(x2)).abs()
    assert d[:, :8].max() > 1e-3 and d[:, 8:].max() == 0




@pytest.mark.parametrize("n_in, n_out", [(13, 5), (17, 5), (5, 13), (5, 17), (4, 5), (1, 5), (5, 1), (40, 5)])
def test_adaptive_pool_matrix_equals_torch_adaptive_pooling(n_in, n_out):
    from models.attention.mlca import adaptive_pool_matrix

    x = torch.randn(2, 3, n_in, 7, dtype=torch.float64)
    ours = torch.einsum("oi,bciw->bcow", adaptive_pool_matrix(n_in, n_out, x), x)
    assert torch.allclose(ours, torch.nn.functional.adaptive_avg_pool2d(x, (n_out, 7)))
