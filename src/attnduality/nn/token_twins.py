"""Non-convex twins of Sahiner et al.'s convex heads: self-attention, MLP-Mixer and (B-)FNO, linear, gated and ReLU.

The equations are Sahiner et al. (2022) eq. (11)–(12) (attention), (17) (Mixer), (24) and (29) ((B-)FNO).

Every head maps ``X`` (N, s, d) to logits (N, c), the token mean (GAP) of an (s, c) output, and has weight decay
``weight_decay() = ½ Σ (‖W1‖_F² + ‖W2‖_F²)`` on merged weights:

* attention: ``W1 = QKᵀ`` (d, d), ``W2 = VW`` (d, c); ``scale`` multiplies the scores (``scale · X W1 Xᵀ``; e.g. the
  paper's ``1/√d``) and must match the convex operator's ``scale``;
* MLP-Mixer: ``W1`` (s, s) mixes tokens, ``W2`` (d, c) mixes channels;
* (B-)FNO (Lemma 4.3/4.6): ``w1`` (s, d_b) is the merged spatial kernel and first layer, ``w2`` (c_b,); the
  circular convolution is ``circ(X)[t, δ*d + k] = X[t − δ (mod grid), k]``, built here by an explicit gather.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import torch
from torch import nn

__all__ = [
    "LinearAttentionHead",
    "GatedAttentionHead",
    "ReLUAttentionHead",
    "LinearMixerHead",
    "GatedMixerHead",
    "LinearFNOHead",
    "GatedFNOHead",
]


class _WeightDecay(nn.Module):
    w1: nn.Parameter
    w2: nn.Parameter

    def weight_decay(self) -> torch.Tensor:
        """``½ Σ (‖W1‖_F² + ‖W2‖_F²)`` over all heads."""
        return 0.5 * (self.w1.square().sum() + self.w2.square().sum())


class LinearAttentionHead(_WeightDecay):
    """``f(X) = mean_t Σ_h scale · (X W1_h Xᵀ) X W2_h`` with ``w1`` (h, d, d), ``w2`` (h, d, c) (eq. (11), σ = id)."""

    def __init__(self, w1: torch.Tensor, w2: torch.Tensor, scale: float = 1.0) -> None:
        super().__init__()
        if w1.ndim != 3 or w2.ndim != 3 or w1.shape[0] != w2.shape[0] or w1.shape[1:] != (w2.shape[1],) * 2:
            raise ValueError(f"expected w1 (h, d, d) and w2 (h, d, c), got {tuple(w1.shape)} and {tuple(w2.shape)}")
        self.scale = float(scale)
        self.w1 = nn.Parameter(w1.clone())
        self.w2 = nn.Parameter(w2.clone())

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        """Attention matrices ``scale · X W1_h Xᵀ`` (N, h, s, s)."""
        return self.scale * torch.einsum("nta,hak,nuk->nhtu", x, self.w1, x)

    def token_forward(self, x: torch.Tensor) -> torch.Tensor:
        """Per-token outputs ``Σ_h (scale · X W1_h Xᵀ) X W2_h`` (N, s, c)."""
        return torch.einsum("nhtu,nul,hlb->ntb", self.scores(x), x, self.w2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.token_forward(x).mean(dim=1)

    @property
    def n_heads(self) -> int:
        return int(self.w1.shape[0])


class GatedAttentionHead(_WeightDecay):
    """``f(X) = mean_t Σ_j Σ_h (M_j ⊙ scale · X W1_{jh} Xᵀ) X W2_{jh}`` with ``M_j = 1{X U_j Xᵀ ≥ 0}``.

    Gated-ReLU attention (gated analogue of Sahiner et al. 2022, Thm 3.3, derived here): ``gates`` (m, d, d) are
    fixed buffers, ``w1`` (m, h, d, d) and ``w2`` (m, h, d, c) the heads of each gate (zero heads are allowed and
    contribute nothing).
    """

    def __init__(self, gates: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor, scale: float = 1.0) -> None:
        super().__init__()
        m, d = gates.shape[0], gates.shape[1]
        if gates.shape != (m, d, d) or w1.ndim != 4 or w1.shape[0] != m or w1.shape[2:] != (d, d):
            raise ValueError(
                f"expected gates (m, d, d) and w1 (m, h, d, d), got {tuple(gates.shape)}, {tuple(w1.shape)}"
            )
        if w2.ndim != 4 or w2.shape[:3] != w1.shape[:3]:
            raise ValueError(f"w2 must be (m, h, d, c) matching w1 {tuple(w1.shape)}, got {tuple(w2.shape)}")
        self.scale = float(scale)
        self.register_buffer("gates", gates.clone())
        self.w1 = nn.Parameter(w1.clone())
        self.w2 = nn.Parameter(w2.clone())

    def masks(self, x: torch.Tensor) -> torch.Tensor:
        """``M[n, j, t, t'] = 1{x_tᵀ U_j x_t' ≥ 0}`` (N, m, s, s)."""
        return (torch.einsum("nta,jab,nub->njtu", x, self.gates.to(x.dtype), x) >= 0).to(x.dtype)

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        """Masked attention matrices ``M_j ⊙ scale · X W1_{jh} Xᵀ`` (N, m, h, s, s)."""
        raw = self.scale * torch.einsum("nta,jhak,nuk->njhtu", x, self.w1, x)
        return self.masks(x).unsqueeze(2) * raw

    def token_forward(self, x: torch.Tensor) -> torch.Tensor:
        """Per-token outputs (N, s, c)."""
        return torch.einsum("njhtu,nul,jhlb->ntb", self.scores(x), x, self.w2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.token_forward(x).mean(dim=1)

    @property
    def n_heads(self) -> int:
        """Heads per gate."""
        return int(self.w1.shape[1])


class ReLUAttentionHead(_WeightDecay):
    """``f(X) = mean_t Σ_h relu(scale · X W1_h Xᵀ) X W2_h``, ``w1`` (h, d, d), ``w2`` (h, d, c) (eq. (11), σ = ReLU).

    The ReLU self-attention head of Sahiner et al. eq. (11)–(12); no gates: the masks are the signs of the scores
    themselves. :func:`~attnduality.convex.recovery_attention.relu_attention_from_gated` builds one from a gated
    convex solution by a cone decomposition.
    """

    def __init__(self, w1: torch.Tensor, w2: torch.Tensor, scale: float = 1.0) -> None:
        super().__init__()
        if w1.ndim != 3 or w2.ndim != 3 or w1.shape[0] != w2.shape[0] or w1.shape[1:] != (w2.shape[1],) * 2:
            raise ValueError(f"expected w1 (h, d, d) and w2 (h, d, c), got {tuple(w1.shape)} and {tuple(w2.shape)}")
        self.scale = float(scale)
        self.w1 = nn.Parameter(w1.clone())
        self.w2 = nn.Parameter(w2.clone())

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        """Attention matrices ``relu(scale · X W1_h Xᵀ)`` (N, h, s, s)."""
        return torch.relu(self.scale * torch.einsum("nta,hak,nuk->nhtu", x, self.w1, x))

    def token_forward(self, x: torch.Tensor) -> torch.Tensor:
        """Per-token outputs ``Σ_h relu(scale · X W1_h Xᵀ) X W2_h`` (N, s, c)."""
        return torch.einsum("nhtu,nul,hlb->ntb", self.scores(x), x, self.w2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.token_forward(x).mean(dim=1)

    @property
    def n_heads(self) -> int:
        return int(self.w1.shape[0])


class LinearMixerHead(_WeightDecay):
    """``f(X) = mean_r Σ_h (W1_h X W2_h)[r]`` with ``w1`` (h, s, s), ``w2`` (h, d, c) (eq. (17), σ = id)."""

    def __init__(self, w1: torch.Tensor, w2: torch.Tensor) -> None:
        super().__init__()
        if w1.ndim != 3 or w2.ndim != 3 or w1.shape[0] != w2.shape[0] or w1.shape[1] != w1.shape[2]:
            raise ValueError(f"expected w1 (h, s, s) and w2 (h, d, c), got {tuple(w1.shape)} and {tuple(w2.shape)}")
        self.w1 = nn.Parameter(w1.clone())
        self.w2 = nn.Parameter(w2.clone())

    def token_forward(self, x: torch.Tensor) -> torch.Tensor:
        """Per-token outputs ``Σ_h W1_h X W2_h`` (N, s, c)."""
        return torch.einsum("hrt,ntk,hkp->nrp", self.w1, x, self.w2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.token_forward(x).mean(dim=1)


class GatedMixerHead(_WeightDecay):
    """``f(X) = mean_r Σ_j Σ_h ((M_j ⊙ W1_{jh} X) W2_{jh})[r]`` with ``M_j = 1{U_j X ≥ 0}`` (gated eq. (17)).

    ``gates`` (m, s, s) are fixed buffers, ``w1`` (m, h, s, s), ``w2`` (m, h, d, c).
    """

    def __init__(self, gates: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor) -> None:
        super().__init__()
        if gates.ndim != 3 or w1.ndim != 4 or w1.shape[0] != gates.shape[0] or w1.shape[2:] != gates.shape[1:]:
            raise ValueError(f"expected gates (m, s, s), w1 (m, h, s, s), got {tuple(gates.shape)}, {tuple(w1.shape)}")
        if w2.ndim != 4 or w2.shape[:2] != w1.shape[:2]:
            raise ValueError(f"w2 must be (m, h, d, c) matching w1 {tuple(w1.shape)}, got {tuple(w2.shape)}")
        self.register_buffer("gates", gates.clone())
        self.w1 = nn.Parameter(w1.clone())
        self.w2 = nn.Parameter(w2.clone())

    def masks(self, x: torch.Tensor) -> torch.Tensor:
        """``M[n, j, r, k] = 1{(U_j X)[r, k] ≥ 0}`` (N, m, s, d)."""
        return (torch.einsum("jrt,ntk->njrk", self.gates.to(x.dtype), x) >= 0).to(x.dtype)

    def token_forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.masks(x).unsqueeze(2) * torch.einsum("jhrt,ntk->njhrk", self.w1, x)
        return torch.einsum("njhrk,jhkp->nrp", hidden, self.w2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.token_forward(x).mean(dim=1)


@functools.lru_cache(maxsize=16)
def _circulant_index(grid: tuple[int, ...]) -> torch.Tensor:
    """``idx[t, δ]`` = flat index of ``t − δ (mod grid)`` (row-major), written with integer arithmetic."""
    s = math.prod(grid)

    def coords(flat: int) -> list[int]:
        out = []
        for size in reversed(grid):
            flat, r = divmod(flat, size)
            out.append(r)
        return out[::-1]

    idx = [[0] * s for _ in range(s)]
    for t in range(s):
        ct = coords(t)
        for delta in range(s):
            cd = coords(delta)
            flat = 0
            for a, size in enumerate(grid):
                flat = flat * size + (ct[a] - cd[a]) % size
            idx[t][delta] = flat
    return torch.tensor(idx, dtype=torch.long)


def _circulant(x: torch.Tensor, grid: tuple[int, ...]) -> torch.Tensor:
    """``circ(X)`` (N, s, s, d): ``[n, t, δ, k] = X[n, t − δ (mod grid), k]``."""
    return x[:, _circulant_index(grid).to(x.device), :]


class _FNOBase(_WeightDecay):
    def _init_grid(self, s: int, groups: int, grid: Sequence[int] | None) -> None:
        self.grid = (s,) if grid is None else tuple(int(v) for v in grid)
        if math.prod(self.grid) != s:
            raise ValueError(f"grid {self.grid} does not have {s} tokens")
        self.groups = groups

    def _grouped_circ(self, x: torch.Tensor) -> torch.Tensor:
        """``circ(X^{(b)})`` for every group (N, B, s, s, d_b)."""
        n, s, d = x.shape
        circ = _circulant(x, self.grid)  # (n, t, δ, d)
        return circ.reshape(n, s, s, self.groups, d // self.groups).permute(0, 3, 1, 2, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.token_forward(x).mean(dim=1)


class LinearFNOHead(_FNOBase):
    """Linear (B-)FNO in merged form (Lemma 4.3/4.6): group ``b`` outputs ``Σ_h circ(X^{(b)}) w1_{bh} w2_{bh}ᵀ``.

    ``w1`` (B, h, s, d_b) with ``w1[b, h, δ, k]`` the weight of ``X^{(b)}[t − δ, k]``, ``w2`` (B, h, c_b); group ``b``
    of the outputs is classes ``b*c_b:(b+1)*c_b``. ``grid``: token grid (row-major), default ``(s,)``.
    """

    def __init__(self, w1: torch.Tensor, w2: torch.Tensor, grid: Sequence[int] | None = None) -> None:
        super().__init__()
        if w1.ndim != 4 or w2.ndim != 3 or w1.shape[:2] != w2.shape[:2]:
            raise ValueError(f"expected w1 (B, h, s, d_b) and w2 (B, h, c_b), got {tuple(w1.shape)}, {tuple(w2.shape)}")
        self._init_grid(int(w1.shape[2]), int(w1.shape[0]), grid)
        self.w1 = nn.Parameter(w1.clone())
        self.w2 = nn.Parameter(w2.clone())

    def token_forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = torch.einsum("nbtek,bhek->nbth", self._grouped_circ(x), self.w1)
        out = torch.einsum("nbth,bhp->ntbp", hidden, self.w2)
        return out.reshape(x.shape[0], x.shape[1], -1)


class GatedFNOHead(_FNOBase):
    """Gated-ReLU (B-)FNO: output group ``b`` is ``Σ_{j,h} D_bj ⊙ (circ(X^{(b)}) w1_{bjh}) w2_{bjh}ᵀ``.

    ``D_bj = 1{circ(X^{(b)}) u_bj ≥ 0}`` (s,) with gates ``u_bj`` read as (s, d_b) like ``w1``.
    ``gates`` (B, m, s, d_b) are fixed buffers, ``w1`` (B, m, h, s, d_b), ``w2`` (B, m, h, c_b).
    """

    def __init__(
        self, gates: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor, grid: Sequence[int] | None = None
    ) -> None:
        super().__init__()
        if gates.ndim != 4 or w1.ndim != 5 or w1.shape[:2] != gates.shape[:2] or w1.shape[3:] != gates.shape[2:]:
            raise ValueError(f"expected gates (B, m, s, d_b), w1 (B, m, h, s, d_b); got {gates.shape}, {w1.shape}")
        if w2.ndim != 4 or w2.shape[:3] != w1.shape[:3]:
            raise ValueError(f"w2 must be (B, m, h, c_b) matching w1 {tuple(w1.shape)}, got {tuple(w2.shape)}")
        self._init_grid(int(gates.shape[2]), int(gates.shape[0]), grid)
        self.register_buffer("gates", gates.clone())
        self.w1 = nn.Parameter(w1.clone())
        self.w2 = nn.Parameter(w2.clone())

    def masks(self, x: torch.Tensor) -> torch.Tensor:
        """``D[n, b, j, t] = 1{(circ(X^{(b)}) u_{bj})[t] ≥ 0}`` (N, B, m, s)."""
        pre = torch.einsum("nbtek,bjek->nbjt", self._grouped_circ(x), self.gates.to(x.dtype))
        return (pre >= 0).to(x.dtype)

    def token_forward(self, x: torch.Tensor) -> torch.Tensor:
        circ = self._grouped_circ(x)
        hidden = torch.einsum("nbtek,bjhek->nbjht", circ, self.w1)
        hidden = self.masks(x).unsqueeze(3) * hidden
        out = torch.einsum("nbjht,bjhp->ntbp", hidden, self.w2)
        return out.reshape(x.shape[0], x.shape[1], -1)
