"""Primal-Attention layer and KSVD loss: official semantics, the zero-objective theorem, padding, precision."""

from __future__ import annotations

import copy
import importlib.util
import os
import sys
import warnings
from pathlib import Path
from types import ModuleType

import pytest
import torch
from torch import nn

from attnduality.nn import PrimalAttention, PrimalFormer, ksvd_loss, primal_layers
from attnduality.nn.primal import landmark_indices

OFFICIAL_ENV = "PRIMAL_ATTENTION_REPO"  # path to a local checkout of github.com/yingyichen-cyy/PrimalAttention


def _layer(d: int = 16, h: int = 2, s: int = 3, **kw: object) -> PrimalAttention:
    torch.manual_seed(0)
    return PrimalAttention(d, h, s, rank_multi=2, **kw).double()  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------------------------
# sampling and building blocks
# ---------------------------------------------------------------------------------------------------------------
def test_landmark_indices_equal_torch_integer_linspace() -> None:
    lengths = torch.arange(1, 2500)
    for n in (1, 2, 3, 7, 50, 200, 300, 960):
        got = landmark_indices(lengths, n)
        want = torch.stack([torch.linspace(0, int(length) - 1, n, dtype=torch.int64) for length in lengths])
        assert torch.equal(got, want), n


def test_num_landmarks_and_parameter_shapes() -> None:
    assert PrimalAttention(32, 4, 5).num_landmarks == 50  # LRA: rank_multi * s
    layer = PrimalAttention(32, 4, 5, max_len=30)  # TS/CV: min(max_len, rank_multi * s)
    assert layer.num_landmarks == 30 and layer.we.shape == (4, 30, 5) and layer.lambdas.shape == (4, 5)
    causal = PrimalAttention(32, 4, 5, causal=True)
    assert causal.we.shape == (4, 8, 5) and causal.wr.shape == (4, 8, 5)  # data-independent (H, d_h, s)
    assert causal.concat.weight.shape == (8, 10)  # Linear(2s -> d_h), shared by the heads
    assert not hasattr(layer, "v_proj")  # no value projection


def test_official_initialisation() -> None:
    layer = PrimalAttention(32, 4, 5, max_len=30)
    flat = layer.we.detach().reshape(4, -1)  # orthogonal_ on a 3-D tensor: orthonormal rows of the flattened heads
    assert torch.allclose(flat @ flat.T, torch.eye(4), atol=1e-5)
    assert 0.0 <= float(layer.lambdas.detach().min()) and float(layer.lambdas.detach().max()) < 1.0


@pytest.mark.parametrize("causal", [False, True])
def test_folded_output_equals_concat_then_projection(causal: bool) -> None:
    layer = _layer(causal=causal)
    x = torch.randn(3, 9, 16, dtype=torch.float64)
    mask = torch.zeros(3, 9, dtype=torch.bool)
    mask[1, 6:] = True
    outs, grads = [], []
    for fold in (True, False):
        layer.fold_output = fold
        layer.zero_grad()
        y = layer(x, mask)
        y.square().sum().backward()
        outs.append(y.detach())
        grads.append([p.grad.clone() for p in layer.parameters() if p.grad is not None])
    assert torch.allclose(outs[0], outs[1], atol=1e-12)
    assert all(torch.allclose(a, b, atol=1e-10) for a, b in zip(grads[0], grads[1], strict=True))


def test_fold_is_chosen_by_flops() -> None:
    assert PrimalAttention(512, 8, 20)._use_fold(8192)  # 2s(H-1) = 280 < 512
    assert not PrimalAttention(512, 8, 40)._use_fold(8192)
    assert not PrimalAttention(512, 8, 20)._use_fold(1)  # building M costs more than one token saves


@pytest.mark.parametrize("causal", [False, True])
def test_gradcheck_float64(causal: bool) -> None:
    layer = _layer(8, 2, 2, causal=causal)
    x = torch.randn(2, 5, 8, dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[False] * 5, [False, False, False, True, True]])

    def f(x: torch.Tensor, *params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = layer(x, mask)
        return y, ksvd_loss(layer, trace="params")

    assert torch.autograd.gradcheck(f, (x, *layer.parameters()), atol=1e-7)


def test_cosine_features_make_the_layer_scale_invariant_in_queries_and_keys() -> None:
    layer = _layer(bias=False)
    x = torch.randn(2, 7, 16, dtype=torch.float64)
    y = layer(x)
    with torch.no_grad():
        layer.qk_proj.weight.mul_(3.7)  # φ(c q) = φ(q): only W_{e|X}, which reads the raw input, matters
    assert torch.allclose(layer(x), y, atol=1e-12)


# ---------------------------------------------------------------------------------------------------------------
# padding and sequence lengths
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("causal", [False, True])
def test_padding_anywhere_changes_nothing(causal: bool) -> None:
    layer = _layer(causal=causal)
    seq = torch.randn(1, 6, 16, dtype=torch.float64)
    alone = layer(seq)
    j_alone = layer.ksvd_objective(per_sample=True)
    j_alone_data = None if causal else layer.ksvd_objective(per_sample=True, trace="data")
    keep = torch.tensor([False, True, True, False, True, True, False, True, True, False, False])  # 6 real tokens
    padded = torch.randn(2, 11, 16, dtype=torch.float64) * 50
    padded[0, keep] = seq[0]
    mask = ~torch.stack([keep, torch.ones(11, dtype=torch.bool)])
    out = layer(padded, mask)
    assert torch.allclose(out[0, keep], alone[0], atol=1e-12)
    assert torch.allclose(layer.ksvd_objective(per_sample=True)[0], j_alone[0], atol=1e-12)
    if j_alone_data is not None:
        assert torch.allclose(layer.ksvd_objective(per_sample=True, trace="data")[0], j_alone_data[0], atol=1e-12)
    assert torch.allclose(out[0, ~keep], layer.out_proj.bias.expand(5, 16))  # official: zero before out_proj


def test_sample_padding_reproduces_the_official_leak() -> None:
    layer = _layer(sample_padding=True)
    x = torch.randn(1, 12, 16, dtype=torch.float64)
    mask = torch.zeros(1, 12, dtype=torch.bool)
    mask[0, 8:] = True
    y1 = layer(x, mask)
    x2 = x.clone()
    x2[0, 8:] += 1.0
    y2 = layer(x2, mask)
    assert (y1[0, :8] - y2[0, :8]).abs().max() > 1e-6  # padding reaches W_{e|X} through the sampled landmarks


@pytest.mark.parametrize("n", [1, 2, 5, 13, 40])
@pytest.mark.parametrize("causal", [False, True])
def test_any_sequence_length(n: int, causal: bool) -> None:
    layer = PrimalAttention(16, 2, 3, causal=causal)  # 30 landmarks: repeated indices when n < 30
    y = layer(torch.randn(2, n, 16))
    assert y.shape == (2, n, 16) and torch.isfinite(y).all()
    assert layer.scores is not None and layer.scores.e.shape == (2, n, 2, 3)


# ---------------------------------------------------------------------------------------------------------------
# precision
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("causal", [False, True])
def test_bfloat16_matches_float32(causal: bool) -> None:
    torch.manual_seed(0)
    layer = PrimalAttention(32, 4, 4, causal=causal)
    x = torch.randn(2, 300, 32)
    ref = layer(x)
    low = copy.deepcopy(layer).bfloat16()
    y = low(x.bfloat16())
    assert y.dtype == torch.bfloat16 and torch.isfinite(y).all()
    assert low.scores is not None and low.scores.e.dtype == torch.float32  # feature maps / scores in float32
    assert (y.float() - ref).abs().max() < 0.02 * ref.abs().max()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z = layer(x)
    assert layer.scores is not None and layer.scores.e.dtype == torch.float32
    assert (z.float() - ref).abs().max() < 0.02 * ref.abs().max()


def test_float64_runs_in_float64() -> None:
    layer = _layer(causal=True)
    y = layer(torch.randn(1, 4000, 16, dtype=torch.float64))
    assert y.dtype == torch.float64 and layer.scores is not None and layer.scores.e.dtype == torch.float64


# ---------------------------------------------------------------------------------------------------------------
# KSVD objective and loss
# ---------------------------------------------------------------------------------------------------------------
def _stationary_point(phi_q: torch.Tensor, phi_k: torch.Tensor, s: int) -> tuple[torch.Tensor, ...]:
    """A KKT point of ``J = ½/N Tr(W_eᵀ G_q W_e Λ²) + ½/N Tr(W_rᵀ G_k W_r Λ²) − Tr(W_eᵀ W_r)`` for one head.

    Stationarity: ``W_r = G_q W_e Λ²/N`` and ``W_e = G_k W_r Λ²/N``, i.e. ``G_k G_q W_e = W_e Λ⁻⁴ N²``. The
    eigenvectors of ``G_k G_q`` are ``G_k^{1/2} v`` for the eigenvectors ``v`` of ``G_k^{1/2} G_q G_k^{1/2}``.
    """
    n = phi_q.shape[0]
    g_q, g_k = phi_q.T @ phi_q, phi_k.T @ phi_k
    ev, vec = torch.linalg.eigh(g_k)
    root = vec @ torch.diag(ev.clamp_min(0).sqrt()) @ vec.T
    mu, v = torch.linalg.eigh(root @ g_q @ root)
    mu, v = mu.flip(0)[:s], v.flip(1)[:, :s]
    assert float(mu.min()) > 1e-6
    we = root @ v
    lam2 = n / mu.sqrt()
    wr = g_q @ we * lam2 / n
    return we, wr, lam2.sqrt(), mu


def test_ksvd_objective_is_zero_at_a_stationary_point_causal() -> None:
    """The paper's theorem: the stationary solution of the KSVD problem has J = 0 (and it is a KSVD of K)."""
    torch.manual_seed(0)
    layer = PrimalAttention(8, 2, 2, causal=True).double()
    x = torch.randn(1, 12, 8, dtype=torch.float64)
    layer(x)
    j_random = layer.ksvd_objective()
    phi_q, phi_k = (t.detach() for t in layer.feature_maps(x))
    with torch.no_grad():
        for h in range(2):
            we, wr, lam, mu = _stationary_point(phi_q[0, h], phi_k[0, h], 2)
            layer.we[h], layer.wr[h], layer.lambdas[h] = we, wr, lam
            # the e-scores are left singular vectors of K = Φ_q Φ_kᵀ with singular values √μ
            e = phi_q[0, h] @ we
            u, sv, _ = torch.linalg.svd(phi_q[0, h] @ phi_k[0, h].T)
            cos = (torch.nn.functional.normalize(e, dim=0) * u[:, :2]).sum(0).abs()
            assert torch.allclose(cos, torch.ones(2, dtype=torch.float64), atol=1e-8)
            assert torch.allclose(sv[:2], mu.sqrt(), atol=1e-8)
    layer(x)
    j = layer.ksvd_objective()
    assert abs(float(j_random.detach())) > 1e-2 and abs(float(j.detach())) < 1e-10
    grad_we, grad_wr = torch.autograd.grad(j, (layer.we, layer.wr))  # and it is stationary
    assert grad_we.abs().max() < 1e-10 and grad_wr.abs().max() < 1e-10
    assert float(ksvd_loss(layer).detach()) < 1e-20
    with torch.no_grad():
        layer.we.mul_(1.1)
    layer(x)
    assert abs(float(layer.ksvd_objective().detach())) > 1e-3


def test_ksvd_objective_is_zero_at_a_stationary_point_data_dependent_weights() -> None:
    """Bidirectional layer: J with the data trace Tr(W_{e|X}ᵀ W_{r|X}) vanishes where W_{e|X}, W_{r|X} are KKT."""
    torch.manual_seed(1)
    layer = PrimalAttention(8, 2, 2, rank_multi=5).double()  # n = 10 landmarks >= d_h = 4
    x = torch.randn(1, 15, 8, dtype=torch.float64)
    phi_q, phi_k = (t.detach() for t in layer.feature_maps(x))
    landmarks = x[0, landmark_indices(torch.tensor([15]), 10)[0]].view(10, 2, 4)
    with torch.no_grad():
        for h in range(2):
            we, wr, lam, _ = _stationary_point(phi_q[0, h], phi_k[0, h], 2)
            pinv = torch.linalg.pinv(landmarks[:, h].T)  # W_{e|X} = X̃_hᵀ W_e  =>  W_e = pinv(X̃_hᵀ) W_{e|X}
            layer.we[h], layer.wr[h], layer.lambdas[h] = pinv @ we, pinv @ wr, lam
    layer(x)
    assert abs(float(layer.ksvd_objective(trace="data").detach())) < 1e-10
    assert abs(float(layer.ksvd_objective(trace="params").detach())) > 1e-3  # the trace_no_x variant is a different J


def test_ksvd_loss_averages_squared_objectives_over_primal_layers() -> None:
    torch.manual_seed(0)
    model = PrimalFormer(3, 16, 2, 3, input_dim=4, max_len=20, rank=3, rank_multi=2, dropout=0.0)
    x = torch.randn(5, 11, 4)
    model(x)
    layers = list(primal_layers(model))
    assert len(layers) == 3
    js = torch.stack([layer.ksvd_objective() for layer in layers])
    assert torch.allclose(ksvd_loss(model), js.square().mean())
    per = torch.stack([layer.ksvd_objective(per_sample=True) for layer in layers])  # (L, B)
    none = ksvd_loss(model, per_sample=True, reduction="none")
    assert none.shape == (5,) and torch.allclose(none, per.square().mean(0))
    assert torch.allclose(ksvd_loss(model, per_sample=True), none.mean())
    assert not torch.allclose(ksvd_loss(model, per_sample=True), ksvd_loss(model))  # the variants differ
    loss = ksvd_loss(model)
    loss.backward()
    for layer in layers:  # Λ, W_e, W_r and the q/k projections are regularised; concat/out_proj are not
        for p in (layer.lambdas, layer.we, layer.wr, layer.qk_proj.weight):
            assert p.grad is not None and p.grad.abs().sum() > 0
    assert layers[-1].out_proj.weight.grad is None  # the last output projection never reaches a score


def test_ksvd_objective_formula_by_hand() -> None:
    layer = _layer()
    x = torch.randn(2, 5, 16, dtype=torch.float64)
    layer(x)
    sc = layer.scores
    assert sc is not None
    lam = layer.lambdas.detach()
    total = torch.zeros((), dtype=torch.float64)
    for b in range(2):
        for i in range(5):
            for h in range(2):
                total += 0.5 * ((lam[h] * sc.e[b, i, h]).norm() ** 2 + (lam[h] * sc.r[b, i, h]).norm() ** 2)
    trace = sum(torch.trace(layer.we[h].T @ layer.wr[h]) for h in range(2)) / 2
    assert torch.allclose(layer.ksvd_objective(), total / 20 - trace)


# ---------------------------------------------------------------------------------------------------------------
# bad input and plumbing
# ---------------------------------------------------------------------------------------------------------------
def test_bad_arguments_raise() -> None:
    with pytest.raises(ValueError, match="divisible"):
        PrimalAttention(10, 3)
    with pytest.raises(ValueError, match="rank"):
        PrimalAttention(8, 2, 0)
    with pytest.raises(ValueError, match="rank_multi"):
        PrimalAttention(8, 2, 2, rank_multi=0)
    with pytest.raises(ValueError, match="max_len"):
        PrimalAttention(8, 2, 2, max_len=0)
    layer = PrimalAttention(8, 2, 2)
    with pytest.raises(ValueError, match="forward pass first"):
        layer.ksvd_objective()
    with pytest.raises(ValueError, match=r"ksvd_loss needs a forward pass first.*1 of 1 .*\(the model\)"):
        ksvd_loss(layer)
    model = PrimalFormer(3, 8, 2, 2, input_dim=4, max_len=6, rank=2)
    with pytest.raises(ValueError, match=r"2 of 2 PrimalAttention layers.*encoder\.layers\.0\.attn"):
        ksvd_loss(model)
    model(torch.randn(2, 6, 4))
    assert torch.isfinite(ksvd_loss(model))
    with pytest.raises(ValueError, match="shape"):
        layer(torch.randn(2, 5, 7))
    with pytest.raises(ValueError, match="NaN"):
        layer(torch.full((1, 3, 8), float("nan")))
    with pytest.raises(ValueError, match="bool"):
        layer(torch.randn(1, 3, 8), torch.zeros(1, 3))
    with pytest.raises(ValueError, match="non-padding"):
        layer(torch.randn(2, 3, 8), torch.tensor([[False] * 3, [True] * 3]))
    layer(torch.randn(1, 3, 8))
    with pytest.raises(ValueError, match="trace"):
        layer.ksvd_objective(trace="x")
    with pytest.raises(ValueError, match="causal"):
        c = PrimalAttention(8, 2, 2, causal=True)
        c(torch.randn(1, 3, 8))
        c.ksvd_objective(trace="data")
    with pytest.raises(ValueError, match="no PrimalAttention"):
        ksvd_loss(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="per_sample"):
        ksvd_loss(layer, reduction="none")


def test_deepcopy_after_forward_and_state_dict() -> None:
    layer = PrimalAttention(8, 2, 2)
    layer(torch.randn(1, 3, 8, requires_grad=True))
    twin = copy.deepcopy(layer)  # the cached scores (with their graph) are not copied
    assert twin.scores is None and layer.scores is not None
    keys = set(layer.state_dict())
    assert {"we", "wr", "lambdas", "qk_proj.weight", "concat.weight", "out_proj.weight"} <= keys


# ---------------------------------------------------------------------------------------------------------------
# equality with the official implementation (needs a local checkout; never vendored)
# ---------------------------------------------------------------------------------------------------------------
def _official_root() -> Path:
    root = os.environ.get(OFFICIAL_ENV)
    if not root:
        pytest.skip(f"set {OFFICIAL_ENV} to a checkout of github.com/yingyichen-cyy/PrimalAttention to compare")
    return Path(root)


def _load(name: str, path: Path) -> ModuleType:
    if not path.is_file():
        pytest.skip(f"{path} not found in the official checkout")
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _copy_from_official(ours: PrimalAttention, q: nn.Linear, k: nn.Linear, out: nn.Linear, inner: nn.Module) -> None:
    with torch.no_grad():
        ours.qk_proj.weight.copy_(torch.cat([q.weight, k.weight]))
        ours.qk_proj.bias.copy_(torch.cat([q.bias, k.bias]))
        ours.out_proj.load_state_dict(out.state_dict())
        ours.concat.load_state_dict(inner.concate_weight.state_dict())
        ours.lambdas.copy_(inner.Lambda)


def test_equals_official_lra_layer() -> None:
    """Bidirectional: official LRA ``Attention`` (primal_cos, float32 inside) with padding, vs ``sample_padding``."""
    mod = _load(
        "_official_lra_attention", _official_root() / "PrimalAttention_LRA/PrimalFormer/attentions/attention.py"
    )
    torch.manual_seed(0)
    d, h, s, rm = 64, 2, 5, 4
    config = {
        "attention_grad_checkpointing": False,
        "transformer_dim": d,
        "head_dim": d // h,
        "num_head": h,
        "attn_type": "primal_cos",
        "max_seq_len": 512,
        "low_rank": s,
        "rank_multi": rm,
        "trace_no_x": True,
        "attention_dropout": 0.0,
    }
    official = mod.Attention(config).eval()
    for sample_padding in (True, False):
        ours = PrimalAttention(d, h, s, rank_multi=rm, sample_padding=sample_padding)
        _copy_from_official(ours, official.W_q, official.W_k, official.ff, official.attn)
        with torch.no_grad():
            ours.we.copy_(official.We)
            ours.wr.copy_(official.Wr)
        for n in (7, 33, 100):
            x = torch.randn(3, n, d)
            keep = torch.ones(3, n)
            if sample_padding:
                keep[1, n // 2 :] = 0.0
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # torch.cuda.amp.autocast in their code
                out, scores, lam = official(x, keep)
            y = ours(x, keep == 0)
            assert (y - out).abs().max() < 1e-5
            assert ours.scores is not None
            assert (ours.scores.e - scores[0].transpose(1, 2)).abs().max() < 1e-5
            # their LRA loss: one J per batch, means over batch, heads and tokens (padding included), raw-param trace
            lam2 = lam.detach() ** 2
            t = 0.5 * (scores[0].square() * lam2[None, :, None]).sum(-1).mean()
            t = t + 0.5 * (scores[1].square() * lam2[None, :, None]).sum(-1).mean()
            j = t - torch.einsum("hps,hpt->hst", scores[2], scores[3]).mean(dim=0).trace()  # trace of the head mean
            assert abs(float(ours.ksvd_objective().detach()) - float(j.detach())) < 1e-5


def test_equals_official_causal_layer() -> None:
    """Causal: official RL ``Primal_attention`` (prefix means, data-independent W_e, W_r), float64."""
    mod = _load(
        "_official_rl_primal", _official_root() / "PrimalAttention_RL/decision_transformer/models/primal_attention.py"
    )
    torch.manual_seed(0)
    d, h, s = 64, 4, 6
    official = mod.Primal_attention(d, h, seq_len=60, low_rank=s, rank_multi=10, drop_out=0.0).double().eval()
    ours = PrimalAttention(d, h, s, causal=True).double()
    _copy_from_official(ours, official.query_projection, official.key_projection, official.out_projection, official)
    with torch.no_grad():
        ours.we.copy_(official.We)
        ours.wr.copy_(official.Wr)
    for n in (1, 9, 60):
        x = torch.randn(2, n, d, dtype=torch.float64)
        out, scores, lam = official(x, x, x)
        y = ours(x)
        assert (y - out).abs().max() < 1e-12
        # their TS/RL loss: J per sample (means over heads and tokens), squared, batch mean
        lam2 = lam.detach() ** 2
        t = 0.5 * ((scores[0].square() + scores[1].square()) * lam2[None, :, None]).sum(-1).mean(dim=(1, 2))
        j = t - torch.einsum("hps,hps->", scores[2], scores[3]) / h
        assert torch.allclose(ours.ksvd_objective(per_sample=True), j, atol=1e-12)
        assert torch.allclose(ksvd_loss(ours, per_sample=True), j.square().mean(), atol=1e-12)
