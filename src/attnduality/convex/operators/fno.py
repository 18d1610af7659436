"""Convex FNO and block-diagonal FNO (B-FNO) heads with GAP over tokens inside the loss.

Sahiner et al. (2022), Lemma 4.3/4.6, Theorems 4.4 and 4.7 (linear) and the gated-ReLU analogues of Theorems 4.5
and 4.8. Tokens lie on a grid (``grid``, row-major, ``prod(grid) = s``; default 1-D ``(s,)``, the paper uses 14×14).

Circulant convention (Lemma 4.3): ``circ(X)[t, δ*d + k] = X[t − δ (mod grid), k]`` (s, s·d), so that the
FNO token mixing ``F^{-1}[(FX)_fᵀ V^{(f)}]`` with kernel ``L`` followed by ``W1`` equals ``circ(X) w1_j`` with
``w1_j[δ*d:(δ+1)*d] = L[δ] W1[:, j]`` (Lemma 4.3). Convolutions are computed with FFTs over the grid axes; ``circ``
is never materialised by the operators (:func:`circulant` builds it for small problems and tests).

B-FNO with ``B`` groups: feature group ``X^{(b)} = X[:, b*d_b:(b+1)*d_b]`` (``d_b = d/B``) only feeds output group
``b`` (classes ``b*c_b:(b+1)*c_b``, ``c_b = c/B``); ``Z`` is (B, s·d_b, c_b) (linear) or (B, m, s·d_b, c_b) (gated,
gates ``U`` (B, m, s, d_b) with ``u[δ*d_b + k] = U[δ, k]``), penalised by ``Σ ‖Z_{b(,j)}‖_*``
(:class:`~attnduality.convex.penalties.BlockNuclearNorm`). Plain FNO is ``B = 1``.

GAP collapse (derived here): the linear (B-)FNO logits are ``x̄_bᵀ Σ_δ Z_b[δ]``, a (grouped) linear model on the mean
token; the gated masks ``D_{bj} = 1{circ(X^{(b)}) u_{bj} ≥ 0}`` break the collapse.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from .base import LinearOperator
from .features import FeatureOperator, check_x

__all__ = ["FNOOperator", "GatedFNOOperator", "circulant", "fno_masks", "sample_fno_gates"]


def _grid(n_tokens: int, grid: Sequence[int] | None) -> tuple[int, ...]:
    g = (int(n_tokens),) if grid is None else tuple(int(v) for v in grid)
    if math.prod(g) != n_tokens or any(v < 1 for v in g):
        raise ValueError(f"grid {g} does not have {n_tokens} tokens")
    return g


def _groups(d: int, c: int, groups: int) -> tuple[int, int]:
    if groups < 1 or d % groups or c % groups:
        raise ValueError(f"groups={groups} must divide both d={d} and c={c}")
    return d // groups, c // groups


def _fft(a: torch.Tensor, grid: tuple[int, ...], axis: int) -> torch.Tensor:
    """FFT over the token axis ``axis`` of ``a`` viewed on ``grid``; returns the same layout (complex)."""
    shape = a.shape[:axis] + grid + a.shape[axis + 1 :]
    dims = tuple(range(axis, axis + len(grid)))
    return torch.fft.fftn(a.reshape(shape), dim=dims).reshape(a.shape)


def _ifft(a: torch.Tensor, grid: tuple[int, ...], axis: int) -> torch.Tensor:
    shape = a.shape[:axis] + grid + a.shape[axis + 1 :]
    dims = tuple(range(axis, axis + len(grid)))
    return torch.fft.ifftn(a.reshape(shape), dim=dims).real.reshape(a.shape)


def circulant(x: torch.Tensor, grid: Sequence[int] | None = None) -> torch.Tensor:
    """``circ(X)`` (N, s, s·d) with ``circ(X)[n, t, δ*d + k] = X[n, t − δ (mod grid), k]`` (Lemma 4.3)."""
    check_x(x)
    n, s, d = x.shape
    g = _grid(s, grid)
    coords = torch.stack(torch.unravel_index(torch.arange(s), g), dim=1)  # (s, ndim)
    diff = (coords[:, None, :] - coords[None, :, :]) % torch.tensor(g)
    idx = torch.zeros(s, s, dtype=torch.long)
    for axis, size in enumerate(g):
        idx = idx * size + diff[..., axis]
    return x[:, idx.to(x.device), :].reshape(n, s, s * d)


def sample_fno_gates(
    n_tokens: int, n_features: int, n_gates: int, seed: int, groups: int = 1, dtype: torch.dtype = torch.float64
) -> torch.Tensor:
    """I.i.d. standard Gaussian gates ``U`` (B, m, s, d/B) (one (s·d/B)-vector per group and gate)."""
    if n_gates < 1 or groups < 1 or n_features % groups:
        raise ValueError(f"need n_gates >= 1 and groups dividing n_features, got {n_gates}, {groups}, {n_features}")
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    return torch.randn(groups, n_gates, n_tokens, n_features // groups, generator=gen, dtype=dtype)


def fno_masks(x: torch.Tensor, gates: torch.Tensor, grid: Sequence[int] | None = None) -> torch.Tensor:
    """``D[n, b, j, t] = 1{(circ(X_n^{(b)}) u_{bj})[t] ≥ 0}`` (N, B, m, s), by FFT (arrangements of Thm 4.5/4.8)."""
    check_x(x)
    n, s, d = x.shape
    if gates.ndim != 4 or gates.shape[2] != s or gates.shape[0] * gates.shape[3] != d:
        raise ValueError(f"gates must be (B, m, {s}, d/B) with d = {d}, got {tuple(gates.shape)}")
    g = _grid(s, grid)
    bb, _, _, db = gates.shape
    fx = _fft(x, g, 1).reshape(n, s, bb, db)
    fu = _fft(gates.to(dtype=x.dtype, device=x.device), g, 2)  # (B, m, s, d_b)
    pre = _ifft(torch.einsum("nfbk,bjfk->nbjf", fx, fu), g, 3)
    return (pre >= 0).to(x.dtype)


class FNOOperator(LinearOperator):
    """Linear (B-)FNO with GAP (Thm 4.4, B = 1; Thm 4.7): ``A(Z)_i[b-group] = mean_t circ(X_i^{(b)}) Z_b``.

    ``Z`` is (B, s·d_b, c_b). Under GAP this is ``x̄_bᵀ Σ_δ Z_b[δ*d_b:(δ+1)*d_b]`` (computed so).
    """

    def __init__(self, x: torch.Tensor, n_outputs: int, groups: int = 1, grid: Sequence[int] | None = None) -> None:
        check_x(x)
        self.x = x
        self.n_samples, self.n_tokens, self.n_features = (int(v) for v in x.shape)
        self.n_outputs, self.groups = int(n_outputs), int(groups)
        self.grid = _grid(self.n_tokens, grid)
        self.d_group, self.c_group = _groups(self.n_features, self.n_outputs, self.groups)
        self.z_shape = (self.groups, self.n_tokens * self.d_group, self.c_group)
        self.dtype, self.device = x.dtype, x.device
        self._xbar = x.mean(dim=1).reshape(self.n_samples, self.groups, self.d_group)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        zsum = z.reshape(self.groups, self.n_tokens, self.d_group, self.c_group).sum(dim=1)
        return torch.einsum("nbk,bkp->nbp", self._xbar, zsum).reshape(self.n_samples, self.n_outputs)

    def adjoint(self, g: torch.Tensor) -> torch.Tensor:
        w = torch.einsum("nbk,nbp->bkp", self._xbar, g.reshape(self.n_samples, self.groups, self.c_group))
        return w[:, None].expand(-1, self.n_tokens, -1, -1).reshape(self.z_shape).clone()

    def token_outputs(self, z: torch.Tensor) -> torch.Tensor:
        """``[circ(X^{(1)}) Z_1 … circ(X^{(B)}) Z_B]`` (N, s, c) before pooling, by FFT."""
        n, s, bb, db, cb = self.n_samples, self.n_tokens, self.groups, self.d_group, self.c_group
        fx = _fft(self.x, self.grid, 1).reshape(n, s, bb, db)
        fz = _fft(z.reshape(bb, s, db, cb).to(fx.dtype), self.grid, 1)
        return _ifft(torch.einsum("nfbk,bfkp->nfbp", fx, fz), self.grid, 1).reshape(n, s, self.n_outputs)


class GatedFNOOperator(FeatureOperator):
    """Gated-ReLU (B-)FNO with GAP (gated Thm 4.5/4.8): ``Z`` (B, m, s·d_b, c_b), gates ``U`` (B, m, s, d_b).

    ``A(Z)_i[b-group] = mean_t Σ_j D_{bj}^{(i)} circ(X_i^{(b)}) Z_{bj}``; features
    ``φ_{bj}[δ, k] = (1/s) Σ_t D_{bj}[t] X^{(b)}[t − δ, k]`` (a circular cross-correlation, by FFT; cached when small).
    """

    def __init__(
        self,
        x: torch.Tensor,
        gates: torch.Tensor,
        n_outputs: int,
        grid: Sequence[int] | None = None,
        cache: bool | None = None,
    ) -> None:
        check_x(x)
        s, d = int(x.shape[1]), int(x.shape[2])
        if gates.ndim != 4 or gates.shape[2] != s or gates.shape[0] * gates.shape[3] != d:
            raise ValueError(f"gates must be (B, m, {s}, d/B) with d = {d}, got {tuple(gates.shape)}")
        self.groups, self.n_gates = int(gates.shape[0]), int(gates.shape[1])
        self.grid = _grid(s, grid)
        self.d_group, self.c_group = _groups(d, int(n_outputs), self.groups)
        self.gates = gates.to(dtype=x.dtype, device=x.device)
        self.n_features_lifted = self.n_gates * s * d
        self.per_sample_work = 4 * self.n_gates * s * d
        self.z_shape = (self.groups, self.n_gates, s * self.d_group, self.c_group)
        self._setup(x, n_outputs, cache, 1.0)

    def masks(self, lo: int = 0, hi: int | None = None) -> torch.Tensor:
        """``D[n, b, j, t]`` for samples ``lo:hi`` (n, B, m, s)."""
        return fno_masks(self.x[lo:hi], self.gates, self.grid)

    def _features(self, lo: int, hi: int) -> torch.Tensor:
        x = self.x[lo:hi]
        n, s, _ = x.shape
        fx = _fft(x, self.grid, 1).reshape(n, s, self.groups, self.d_group)
        fm = _fft(self.masks(lo, hi).to(fx.dtype), self.grid, 3)  # (n, B, m, s)
        phi = _ifft(torch.einsum("nbjf,nfbk->nbjfk", fm, fx.conj()), self.grid, 3) / s
        return phi.reshape(n, -1)  # [b, j, δ, k]

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        zf = z.reshape(self.groups, -1, self.c_group)
        out = torch.empty(self.n_samples, self.groups, self.c_group, dtype=self.dtype, device=self.device)
        for lo, hi, phi in self._chunks():
            out[lo:hi] = torch.einsum("nbf,bfp->nbp", phi.reshape(hi - lo, self.groups, -1), zf)
        return out.reshape(self.n_samples, self.n_outputs)

    def adjoint(self, g: torch.Tensor) -> torch.Tensor:
        g3 = g.reshape(self.n_samples, self.groups, self.c_group)
        acc = torch.zeros(self.groups, self.n_features_lifted // self.groups, self.c_group, dtype=self.dtype)
        acc = acc.to(self.device)
        for lo, hi, phi in self._chunks():
            acc += torch.einsum("nbf,nbp->bfp", phi.reshape(hi - lo, self.groups, -1), g3[lo:hi])
        return acc.reshape(self.z_shape)

    def token_outputs(self, z: torch.Tensor) -> torch.Tensor:
        """``[Σ_j D_{bj} circ(X^{(b)}) Z_{bj}]_b`` (N, s, c) before pooling, by FFT."""
        n, s, bb, db, cb = self.n_samples, self.n_tokens, self.groups, self.d_group, self.c_group
        fx = _fft(self.x, self.grid, 1).reshape(n, s, bb, db)
        fz = _fft(z.reshape(bb, self.n_gates, s, db, cb).to(fx.dtype), self.grid, 2)
        conv = _ifft(torch.einsum("nfbk,bjfkp->nbjfp", fx, fz), self.grid, 3)  # (n, B, m, s, c_b)
        out = torch.einsum("nbjt,nbjtp->ntbp", self.masks(), conv)
        return out.reshape(n, s, self.n_outputs)
