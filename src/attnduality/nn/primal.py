"""Primal-Attention (Chen, Tao, Tonin & Suykens, NeurIPS 2023) and its KSVD regulariser, as in the official code.

Self-attention is the dual of an asymmetric kernel SVD (KSVD) of ``K = φ_q(X) φ_k(X)ᵀ``; Primal-Attention computes
the primal scores instead, never forming an N×N matrix. Per head ``h`` (head dim ``d_h = D/H``, rank ``s``):

* cosine feature maps ``φ_q(x) = q/‖q‖``, ``φ_k(x) = k/‖k‖`` of the query/key projections (no value projection, no
  softmax, no 1/√d scaling);
* data-dependent primal weights ``W_{e|X} = X̃_hᵀ W_e``, ``W_{r|X} = X̃_hᵀ W_r`` (d_h × s) from ``n`` evenly sampled
  tokens ``X̃`` (``linspace(0, N−1, n)`` over the layer input, channel chunk ``h``), ``W_e, W_r`` (H, n, s)
  parameters with ``n = min(max_len, rank_multi·s)`` (``rank_multi·s`` when ``max_len`` is None);
* scores ``e_i = W_{e|X}ᵀ φ_q(x_i)``, ``r_i = W_{r|X}ᵀ φ_k(x_i)`` (the paper's primal representation, eq. of
  Fig. 1 right), concatenated ``[e_i; r_i]`` and mapped by one Linear(2s → d_h) shared by the heads, then the
  output projection;
* ``Λ`` (``lambdas``, (H, s), U[0, 1) init, unconstrained) enters only the KSVD objective
  ``J = ½ mean‖Λ e‖² + ½ mean‖Λ r‖² − Tr(mean_h W_eᵀ W_r)``, whose stationary points have ``J = 0``
  (the paper's zero-objective theorem), so ``η·J²`` is the regulariser.

Causal variant (``causal=True``, as in the official RL/NLP code): ``W_e, W_r`` are data-independent (H, d_h, s)
parameters and ``q, k`` are replaced by their prefix means ``(1/t) Σ_{τ≤t} q_τ`` before the feature maps.

Differences from the official code, all documented on the class: padding tokens are excluded from the landmark sample,
from the causal prefix means and from the KSVD means (``sample_padding=True`` restores the official LRA behaviour,
where they are included); the concat map and the output projection are folded into one (2Hs × D) matrix when that is
cheaper (mathematically identical, ``fold_output``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .checks import check_attention_input, check_heads

__all__ = ["PrimalAttention", "PrimalScores", "ksvd_loss", "landmark_indices", "primal_layers"]

_LOW_PRECISION = (torch.float16, torch.bfloat16)


def landmark_indices(lengths: torch.Tensor, n: int) -> torch.Tensor:
    """``torch.linspace(0, L−1, n, dtype=int)`` for every length ``L`` in ``lengths`` at once: (len(lengths), n).

    Reproduces PyTorch's integer ``linspace`` exactly (a float64 step, the first half counted from the start and the
    second half from the end, then truncated), so the sampled tokens equal the official code's.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    last = (lengths.to(torch.float64) - 1.0)[:, None]
    if n == 1:
        return torch.zeros(lengths.shape[0], 1, dtype=torch.long, device=lengths.device)
    k = torch.arange(n, dtype=torch.float64, device=lengths.device)[None, :]
    step = last / (n - 1)
    idx = torch.where(k < n // 2, step * k, last - step * (n - 1 - k))
    return idx.to(torch.long)


_EPS = 1e-12  # F.normalize's default: features of norm below it are zero


class _CosineScores(torch.autograd.Function):
    """``S = (f / max(‖f‖, ε)) W`` per (batch, [q|k], head): f (B, N, 2, H, d_h), W (B, 2, H, d_h, s) → (B, N, 2, H, s).

    Fused cosine feature map and primal projection. It never materialises ``φ(f)``: the (N, d_h) features are
    multiplied first and the (N, s) result is divided by the norms, and the backward pass reads ``f`` once per
    matrix product. Autograd through ``F.normalize`` and ``einsum`` keeps about five more (N, 2D) tensors alive and
    streams them several times; this is a third of the layer's time at N = 8192 on one core.
    """

    @staticmethod
    def forward(ctx: Any, f: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        norm = torch.linalg.vector_norm(f, dim=-1, keepdim=True)  # (B, N, 2, H, 1)
        denom = norm.clamp_min(_EPS)
        s = torch.matmul(f.permute(0, 2, 3, 1, 4), w).permute(0, 3, 1, 2, 4) / denom  # (B, N, 2, H, s)
        ctx.save_for_backward(f, w, denom, s)
        return s

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        f, w, denom, s = ctx.saved_tensors
        g = grad / denom  # dL/d(f W) = dL/dS / ‖f‖
        grad_w = grad_f = None
        if ctx.needs_input_grad[1]:
            grad_w = torch.matmul(f.permute(0, 2, 3, 4, 1), g.permute(0, 2, 3, 1, 4))
            if grad_w.shape != w.shape:  # w was broadcast over the batch
                grad_w = grad_w.sum(dim=0, keepdim=True)
        if ctx.needs_input_grad[0]:
            # d‖f‖ term: dL/dnorm = −Σ_s grad·S / ‖f‖, times ∂‖f‖/∂f = f/‖f‖ (zero where the norm was clamped)
            coef = -(grad * s).sum(dim=-1, keepdim=True) / denom
            coef = torch.where(denom > _EPS, coef / denom, torch.zeros_like(coef))
            gw = torch.matmul(g.permute(0, 2, 3, 1, 4), w.transpose(-1, -2)).permute(0, 3, 1, 2, 4)
            grad_f = torch.addcmul(gw, f, coef, out=torch.empty_like(f))
        return grad_f, grad_w


@dataclass
class PrimalScores:
    """What one forward pass leaves for the KSVD objective.

    ``e``, ``r``: (B, N, H, s) scores; ``weights``: (B, 2, H, d_h, s) data-dependent primal weights ``W_{e|X}``,
    ``W_{r|X}`` (None for the causal layer); ``valid``: (B, N) float token weights (None: every token counts).
    """

    e: torch.Tensor
    r: torch.Tensor
    weights: torch.Tensor | None
    valid: torch.Tensor | None


class PrimalAttention(nn.Module):
    """Primal-Attention layer (Chen et al. 2023, §3–4, as in the official code), batch first: (B, N, D) → (B, N, D).

    Args:
        embed_dim: ``D``; must be divisible by ``num_heads``.
        num_heads: ``H``.
        rank: ``s``, the number of singular directions (``low_rank`` in the official code).
        max_len: caps the landmark count ``n = min(max_len, rank_multi·rank)`` (official TS/CV); ``None`` keeps
            ``n = rank_multi·rank`` (official LRA; indices repeat when ``N < n``). Any sequence length works.
        causal: prefix-mean queries/keys and data-independent (H, d_h, s) ``W_e, W_r`` (official RL/NLP).
        rank_multi: landmark multiplier (official default 10).
        bias: biases of the query/key and output projections (the concat map always has one, as officially).
        dropout: dropout on the output (training only).
        sample_padding: ``False`` (default): padding tokens never reach valid outputs (landmarks are sampled from
            the non-padding tokens of each sequence; prefix means and KSVD means skip padding). ``True``: the
            official LRA behaviour (landmarks over all N positions, padding inside the KSVD means).
        fold_output: fold the concat map into the output projection (``None``: when it needs fewer flops).

    Padding positions output the output projection's bias (the official code zeroes them before that projection).
    Precision: parameters and projections run in the input dtype; for float16/bfloat16 inputs the feature maps,
    the prefix sums, the primal weights, the scores and the KSVD objective run in float32 (a bfloat16 norm or
    prefix sum over thousands of tokens keeps two or three significant digits; the official LRA code also forces
    this part to float32), and the scores are cast back for the output projection. float32/float64 run throughout
    in their own precision.

    After each forward, :attr:`scores` holds the e/r scores; :meth:`ksvd_objective` and :func:`ksvd_loss` read them.
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        rank: int = 20,
        *,
        max_len: int | None = None,
        causal: bool = False,
        rank_multi: int = 10,
        bias: bool = True,
        dropout: float = 0.0,
        sample_padding: bool = False,
        fold_output: bool | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.head_dim = check_heads(embed_dim, num_heads)
        for name, val in (("rank", rank), ("rank_multi", rank_multi)):
            if not isinstance(val, int) or isinstance(val, bool) or val < 1:
                raise ValueError(f"{name} must be an int >= 1, got {val!r}")
        if max_len is not None and (not isinstance(max_len, int) or max_len < 1):
            raise ValueError(f"max_len must be an int >= 1 or None, got {max_len!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.embed_dim, self.num_heads, self.rank, self.rank_multi = embed_dim, num_heads, rank, rank_multi
        self.max_len, self.causal, self.dropout = max_len, bool(causal), float(dropout)
        self.sample_padding, self.fold_output = bool(sample_padding), fold_output
        self.num_landmarks = rank * rank_multi if max_len is None else min(max_len, rank * rank_multi)
        kw: dict[str, Any] = {"device": device, "dtype": dtype}
        rows = self.head_dim if self.causal else self.num_landmarks
        self.qk_proj = nn.Linear(embed_dim, 2 * embed_dim, bias=bias, **kw)  # [W_q; W_k]
        self.we = nn.Parameter(torch.empty(num_heads, rows, rank, **kw))
        self.wr = nn.Parameter(torch.empty(num_heads, rows, rank, **kw))
        self.lambdas = nn.Parameter(torch.empty(num_heads, rank, **kw))
        self.concat = nn.Linear(2 * rank, self.head_dim, **kw)
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias, **kw)
        self.scores: PrimalScores | None = None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Official initialisation: default Linear init, ``orthogonal_`` on the 3-D ``W_e, W_r``, Λ ~ U[0, 1)."""
        self.qk_proj.reset_parameters()
        self.concat.reset_parameters()
        self.out_proj.reset_parameters()
        with torch.no_grad():
            nn.init.orthogonal_(self.we)
            nn.init.orthogonal_(self.wr)
            nn.init.uniform_(self.lambdas)

    def extra_repr(self) -> str:
        return (
            f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, rank={self.rank}, "
            f"num_landmarks={self.num_landmarks}, causal={self.causal}"
        )

    def __getstate__(self) -> dict[str, Any]:  # deepcopy/pickle: never carry the last batch's graph
        state = self.__dict__.copy()
        state["scores"] = None
        return state

    # ------------------------------------------------------------------------------------------------------------
    def _use_fold(self, tokens: int) -> bool:
        if self.fold_output is not None:
            return self.fold_output
        s, d, h = self.rank, self.embed_dim, self.num_heads
        unfolded = tokens * (4 * s * d + 2 * d * d)
        folded = tokens * 4 * h * s * d + 4 * s * d * d
        return folded < unfolded

    @staticmethod
    def _compute_dtype(x: torch.Tensor) -> torch.dtype:
        return torch.float32 if x.dtype in _LOW_PRECISION else x.dtype

    def _features(self, qk: torch.Tensor, valid: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
        """Queries and keys ``[q; k]`` (B, N, 2, H, d_h), prefix means when causal (normalised later)."""
        b, n, _ = qk.shape
        f = qk.to(dtype).view(b, n, 2, self.num_heads, self.head_dim)
        if self.causal:
            if valid is None:
                count = torch.arange(1, n + 1, device=f.device, dtype=dtype)[None, :, None, None, None]
                f = f.cumsum(dim=1) / count
            else:
                v = valid.to(dtype)[:, :, None, None, None]
                f = (f * v).cumsum(dim=1) / v.cumsum(dim=1).clamp_min(1.0)
        return f

    def _landmarks(self, x: torch.Tensor, key_padding_mask: torch.Tensor | None) -> torch.Tensor:
        """The ``n`` evenly sampled tokens X̃ (B, n, D) of the layer input."""
        b, n = x.shape[0], x.shape[1]
        if key_padding_mask is None or self.sample_padding:
            idx = landmark_indices(torch.tensor([n], device=x.device), self.num_landmarks)[0]
            return x[:, idx]
        lengths = (~key_padding_mask).sum(dim=1)
        idx = landmark_indices(lengths, self.num_landmarks)  # positions among the non-padding tokens
        order = torch.argsort(key_padding_mask.to(torch.int8), dim=1, stable=True)  # non-padding first, in order
        pos = order.gather(1, idx)
        return x.gather(1, pos[:, :, None].expand(b, self.num_landmarks, x.shape[2]))

    def _primal_weights(
        self, x: torch.Tensor, key_padding_mask: torch.Tensor | None, dtype: torch.dtype
    ) -> torch.Tensor:
        """``[W_{e|X}; W_{r|X}]`` (B, 2, H, d_h, s), or the causal layer's ``[W_e; W_r]`` (1, 2, H, d_h, s)."""
        w = torch.stack((self.we, self.wr)).to(dtype)  # (2, H, rows, s)
        if self.causal:
            return w.unsqueeze(0)  # broadcast over the batch
        xl = self._landmarks(x, key_padding_mask).to(dtype)
        xl = xl.view(x.shape[0], self.num_landmarks, self.num_heads, self.head_dim)
        return torch.einsum("bnhd,thns->bthds", xl, w)

    def _folded(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """``M`` (2·H·s, D) and ``c`` (D,) with ``out_proj(concat([e_h; r_h])_h) = [e; r] M + c + b_out``."""
        c = self.concat.weight.view(self.head_dim, 2, self.rank)  # (d_h, [e|r], s)
        wo = self.out_proj.weight.view(self.embed_dim, self.num_heads, self.head_dim)
        m = torch.einsum("dtk,ohd->thko", c, wo).reshape(2 * self.num_heads * self.rank, self.embed_dim)
        c0 = torch.einsum("d,ohd->o", self.concat.bias, wo)
        return m.to(dtype), c0.to(dtype)

    def _fp32_region(self, x: torch.Tensor) -> contextlib.AbstractContextManager[Any]:
        if torch.is_autocast_enabled(x.device.type):
            return torch.autocast(device_type=x.device.type, enabled=False)
        return contextlib.nullcontext()

    # ------------------------------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        check_attention_input(x, key_padding_mask, self.embed_dim)
        b, n, d = x.shape
        dtype = self._compute_dtype(x)
        valid = None if key_padding_mask is None else ~key_padding_mask
        qk = self.qk_proj(x)  # (B, N, 2D): the bulk of the flops, in the input (or autocast) dtype
        with self._fp32_region(x):
            feats = self._features(qk, valid, dtype)
            weights = self._primal_weights(x, key_padding_mask, dtype)
            s = _CosineScores.apply(feats, weights)  # (B, N, 2, H, s): [e; r] per head
        out_dtype = qk.dtype
        self.scores = PrimalScores(
            e=s[:, :, 0],
            r=s[:, :, 1],
            weights=None if self.causal else weights,
            valid=None if valid is None or self.sample_padding else valid.to(dtype),
        )
        if self._use_fold(b * n):
            m, c0 = self._folded(out_dtype)
            flat = s.reshape(b, n, 2 * self.num_heads * self.rank).to(out_dtype)
            if valid is None:
                bias = c0 if self.out_proj.bias is None else c0 + self.out_proj.bias.to(out_dtype)
                y = F.linear(flat, m.t(), bias)
            else:
                y = torch.addmm(c0, flat.view(b * n, -1), m).view(b, n, d) * valid[:, :, None].to(out_dtype)
                if self.out_proj.bias is not None:
                    y = y + self.out_proj.bias.to(out_dtype)
        else:
            per_head = s.permute(0, 1, 3, 2, 4).reshape(b, n, self.num_heads, 2 * self.rank).to(out_dtype)
            o = self.concat(per_head)  # (B, N, H, d_h)
            if valid is not None:
                o = o * valid[:, :, None, None].to(o.dtype)
            y = self.out_proj(o.reshape(b, n, d))
        return F.dropout(y, self.dropout, self.training)

    def feature_maps(
        self, x: torch.Tensor, key_padding_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The cosine feature maps ``φ_q(X), φ_k(X)`` (B, H, N, d_h) the layer uses (of prefix means when causal).

        Padding tokens get zero features. Computed in float32 for float16/bfloat16 inputs.
        """
        check_attention_input(x, key_padding_mask, self.embed_dim)
        valid = None if key_padding_mask is None else ~key_padding_mask
        f = self._features(self.qk_proj(x), valid, self._compute_dtype(x))
        feats = F.normalize(f, p=2.0, dim=-1, eps=_EPS)
        if valid is not None:
            feats = feats * valid[:, :, None, None, None].to(feats.dtype)
        return feats[:, :, 0].transpose(1, 2), feats[:, :, 1].transpose(1, 2)

    def attention_matrix(self, x: torch.Tensor, key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        """The implied asymmetric kernel ``K = φ_q(X) φ_k(X)ᵀ`` (B, H, N, N) whose KSVD the layer represents.

        ``κ(x_i, x_j) = ⟨φ_q(x_i), φ_k(x_j)⟩`` (Chen et al. 2023, Fig. 1); rows and columns of padding tokens are zero.
        """
        phi_q, phi_k = self.feature_maps(x, key_padding_mask)
        return phi_q @ phi_k.transpose(-2, -1)

    def ksvd_objective(self, per_sample: bool = False, trace: str = "params") -> torch.Tensor:
        """The KSVD objective ``J`` of the last forward pass, with the official code's scaling (means, not sums).

        ``J = ½ mean_{h,i} ‖Λ_h e_{h,i}‖² + ½ mean_{h,i} ‖Λ_h r_{h,i}‖² − Tr(mean_h W_{e,h}ᵀ W_{r,h})``; means run over
        heads and non-padding tokens (``per_sample=True``: per sequence, shape (B,), as the official TS/RL/NLP code;
        ``False``: one scalar over the batch, as LRA/CV). ``trace="params"`` uses the parameters ``W_e, W_r``
        (``--trace_no_x``, all released scripts); ``"data"`` uses ``W_{e|X}, W_{r|X}`` averaged over heads (and the
        batch when not per sample); the causal layer has only ``"params"``.
        """
        if trace not in ("params", "data"):
            raise ValueError(f"trace must be 'params' or 'data', got {trace!r}")
        sc = self.scores
        if sc is None:
            raise ValueError(
                "ksvd_objective needs a forward pass first: call the layer on a batch, then read its KSVD objective"
            )
        if trace == "data" and sc.weights is None:
            raise ValueError("trace='data' needs data-dependent weights; the causal layer has only trace='params'")
        lam2 = self.lambdas.to(sc.e.dtype).square()
        t = 0.5 * ((sc.e.square() + sc.r.square()) * lam2).sum(dim=-1)  # (B, N, H)
        h = self.num_heads
        if sc.valid is None:
            proj = t.mean(dim=(1, 2)) if per_sample else t.mean()
        else:
            w = sc.valid[:, :, None]
            proj = (t * w).sum(dim=(1, 2)) / (h * sc.valid.sum(dim=1)) if per_sample else (t * w).sum() / (h * w.sum())
        if trace == "params":
            tr = (self.we * self.wr).sum().to(sc.e.dtype) / h
        else:
            assert sc.weights is not None
            prod = sc.weights[:, 0] * sc.weights[:, 1]
            tr = prod.sum(dim=(1, 2, 3)) / h if per_sample else prod.sum() / (h * prod.shape[0])
        return proj - tr


def primal_layers(model: nn.Module) -> Iterator[PrimalAttention]:
    """Every :class:`PrimalAttention` inside ``model`` (including ``model`` itself), in module order."""
    for m in model.modules():
        if isinstance(m, PrimalAttention):
            yield m


def ksvd_loss(
    model: nn.Module, *, per_sample: bool = False, trace: str = "params", reduction: str = "mean"
) -> torch.Tensor:
    """KSVD regulariser ``(1/L) Σ_l J_l²`` over every primal layer of ``model``, from its last forward pass.

    Add ``η · ksvd_loss(model)`` to the task loss (Chen et al. 2023; the official code divides by the number of primal
    layers ``L``). ``per_sample=True`` squares ``J`` per sequence (official TS/RL/NLP) and ``reduction="mean"``
    averages over the batch (``"none"``: the (B,) vector, to add to per-sample losses); ``per_sample=False`` squares
    one ``J`` per batch (official LRA/CV). ``trace`` as in :meth:`PrimalAttention.ksvd_objective`.
    """
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    if reduction == "none" and not per_sample:
        raise ValueError("reduction='none' needs per_sample=True")
    layers = list(primal_layers(model))
    if not layers:
        raise ValueError(f"{type(model).__name__} contains no PrimalAttention layer")
    idle = [
        name or "(the model)"
        for name, m in model.named_modules()
        if isinstance(m, PrimalAttention) and m.scores is None
    ]
    if idle:
        raise ValueError(
            f"ksvd_loss needs a forward pass first: run the model on a batch before ksvd_loss(model) "
            f"({len(idle)} of {len(layers)} PrimalAttention layers have no scores yet: {', '.join(idle[:3])})"
        )
    total = sum(layer.ksvd_objective(per_sample=per_sample, trace=trace).square() for layer in layers)
    loss = total / len(layers)
    assert isinstance(loss, torch.Tensor)
    return loss.mean() if per_sample and reduction == "mean" else loss
