"""The convex two-layer gated-ReLU network (Sahiner et al. eq. (8); Mishkin et al. 2022).

``A(Z) = Σ_j D_j X Z_j`` with ``D_j = diag(1{X g_j ≥ 0})`` and ``Z`` of shape (P, d, c).
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

import torch

from .base import LinearOperator, TangentMap

if TYPE_CHECKING:
    from ..penalties import TangentJacobian

__all__ = ["GatedMLPOperator"]

_TANGENT_GAIN = 1.0  # tangent map where its flops are ≤ this × half the full operator's; 0.5 and 2 were within
# the load's noise of 1 on the quickstart program (9.7 / 9.0 / 9.2 s, BENCHMARKS.md §7); 0 switches it off


class GatedMLPOperator(LinearOperator):
    """``A(Z) = Σ_j D_j X Z_j`` for data ``X`` (N, d) and 0/1 masks ``D`` (N, P)."""

    def __init__(self, x: torch.Tensor, masks: torch.Tensor, n_outputs: int) -> None:
        if masks.shape[0] != x.shape[0]:
            raise ValueError(f"masks have {masks.shape[0]} rows but X has {x.shape[0]} samples")
        self.x = x
        self.x_t = x.T.contiguous()  # Xᵀ in its own layout: GEMMs with a transposed view ran 1.1–1.2× slower
        self.masks = masks.to(dtype=x.dtype)
        self.n_samples, self.n_features = x.shape
        self.n_patterns = int(masks.shape[1])
        self.n_outputs = int(n_outputs)
        self.z_shape = (self.n_patterns, self.n_features, self.n_outputs)
        self.dtype, self.device = x.dtype, x.device

    def _workspace(self, width: int) -> torch.Tensor:
        """One reused (N, width) buffer: fresh N×P temporaries are served by mmap and page-faulted in on every
        call, which made an elementwise product ~8× slower at N = 10⁴, P = 500 (benchmarks/bench_pyscnn.py)."""
        ws = self.__dict__.get("_ws")
        if ws is None or ws.shape[1] != width:
            ws = torch.empty(self.n_samples, width, dtype=self.dtype, device=self.device)
            self._ws = ws
        return ws

    def _workspace_t(self, height: int) -> torch.Tensor:
        """One reused (height, N) buffer, as :meth:`_workspace`."""
        ws = self.__dict__.get("_ws_t")
        if ws is None or ws.shape[0] != height:
            ws = torch.empty(height, self.n_samples, dtype=self.dtype, device=self.device)
            self._ws_t = ws
        return ws

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """``Σ_j D_j X Z_j``: with more gates than features as ``Σ_i X[:, i] ∘ (D Z)[:, i]`` (one GEMM with the masks
        and (N, d·c) temporaries), else as ``Σ_j D[:, j] ∘ (X Z_j)`` (one GEMM with X and (N, P·c) temporaries). The
        two cost the same flops; the temporaries are what differ (2× at N = 10⁴, d = 50, P = 500, c = 1)."""
        n, (p, d, c) = self.n_samples, self.z_shape
        if p > d:
            mz = torch.matmul(self.masks, z.reshape(p, d * c), out=self._workspace(d * c))
            if c == 1:
                return mz.mul_(self.x).sum(1, keepdim=True)
            return torch.bmm(self.x.unsqueeze(1), mz.view(n, d, c)).squeeze(1)
        ws = self._workspace(p * c)
        if c == 1:
            torch.matmul(self.x, z[:, :, 0].T, out=ws)
            return ws.mul_(self.masks).sum(1, keepdim=True)
        torch.matmul(self.x, z.permute(1, 0, 2).reshape(d, p * c), out=ws)
        return torch.bmm(self.masks.unsqueeze(1), ws.view(n, p, c)).squeeze(1)

    def adjoint(self, g: torch.Tensor) -> torch.Tensor:
        """``(A* G)_j = Xᵀ D_j G``: as ``((Xᵀ ⊗ Gᵀ) D)ᵀ`` with more gates than features, else ``Xᵀ (D ⊗ G)`` (see
        :meth:`forward`). The first keeps the masks' own layout: ``Dᵀ (X ⊗ G)`` through the transposed view of the
        (N, P) masks took 2.3× longer at N = 10⁴, P = 500 (one thread)."""
        n, (p, d, c) = self.n_samples, self.z_shape
        if p > d:
            ws = self._workspace_t(d * c)
            torch.mul(self.x_t.unsqueeze(1), g.T.unsqueeze(0), out=ws.view(d, c, n))
            return (ws @ self.masks).view(d, c, p).permute(2, 0, 1).contiguous()
        ws = self._workspace(p * c)
        if c == 1:
            torch.mul(self.masks, g, out=ws)
            return (self.x_t @ ws).T.unsqueeze(-1)
        torch.mul(self.masks.unsqueeze(-1), g.unsqueeze(1), out=ws.view(n, p, c))
        return (self.x_t @ ws).view(d, p, c).permute(1, 0, 2)

    def dual_gram(self, a: torch.Tensor, u: torch.Tensor) -> torch.Tensor | None:
        """``Σ_j D_j X (a_j I + u_j u_jᵀ) Xᵀ D_j = (XXᵀ) ∘ (D diag(a) Dᵀ) + V Vᵀ`` with ``V = (X Uᵀ) ∘ D``
        (D the (N, P) masks): ``O(N²(P + d))`` without forming the lifted matrix; single output only."""
        if self.n_outputs != 1:
            return None
        if tuple(a.shape) != (self.n_patterns,) or tuple(u.shape) != self.z_shape:
            raise ValueError(
                f"dual_gram needs a of shape ({self.n_patterns},) and u of shape {self.z_shape}, got "
                f"{tuple(a.shape)} and {tuple(u.shape)}"
            )
        xxt = self.__dict__.get("_xxt")
        if xxt is None:
            xxt = self._xxt = self.x @ self.x.T
        v = (self.x @ u[:, :, 0].T).mul_(self.masks)
        return torch.addmm(xxt * ((self.masks * a) @ self.masks.T), v, v.T)

    def astype(self, dtype: torch.dtype) -> GatedMLPOperator | None:
        """The operator on the data and masks cast to ``dtype`` (``None`` where the data do not fit in it); kept, so
        that repeated calls cost nothing."""
        if not dtype.is_floating_point:
            raise ValueError(f"astype needs a floating-point dtype, got {dtype}")
        if dtype == self.dtype:
            return self
        cache = self.__dict__.setdefault("_astype", {})
        if dtype not in cache:
            x = self.x.to(dtype)
            cache[dtype] = GatedMLPOperator(x, self.masks, self.n_outputs) if bool(torch.isfinite(x).all()) else None
        return cache[dtype]

    def restrict(self, index: torch.Tensor) -> GatedMLPOperator:
        """The gates ``index`` alone: the same data, the masks' columns ``index``."""
        if (
            index.ndim != 1
            or index.dtype != torch.long
            or (len(index) and not 0 <= int(index.min()) <= int(index.max()) < self.n_patterns)
        ):
            raise ValueError(
                f"restrict needs a 1-D integer index into the {self.n_patterns} gates, got {index.dtype} of shape "
                f"{tuple(index.shape)}"
            )
        op = copy.copy(self)
        op.masks = self.masks[:, index]
        op.n_patterns = int(op.masks.shape[1])
        op.z_shape = (op.n_patterns, self.n_features, self.n_outputs)
        for key in ("_ws", "_ws_t", "_astype"):  # scratch buffers and casts are per operator; Xᵀ and XXᵀ are shared
            op.__dict__.pop(key, None)
        return op

    def tangent_map(self, jac: TangentJacobian) -> TangentMap | None:
        """:class:`_GatedTangent`, where its ``2NK(4c + 2d)`` flops per ``A J A*`` (``K`` active singular pairs) are
        at most half of the full operator's ``4NPdc``."""
        c, d = self.n_outputs, self.n_features
        blocks, rank = jac.columns.shape
        if (
            tuple(jac.left.shape) != (blocks, d, rank)
            or tuple(jac.right.shape) != (blocks, c, rank)
            or tuple(jac.index.shape) != (blocks,)
            or (blocks and not 0 <= int(jac.index.min()) <= int(jac.index.max()) < self.n_patterns)
        ):
            raise ValueError(
                f"tangent_map needs blocks of shape ({d}, {c}) among {self.n_patterns} patterns; got index "
                f"{tuple(jac.index.shape)}, left {tuple(jac.left.shape)}, right {tuple(jac.right.shape)}"
            )
        k = int(jac.columns.sum())
        if k * (4 * c + 2 * d) > self.n_patterns * d * c * _TANGENT_GAIN:
            return None
        return _GatedTangent(self, jac)


class _GatedTangent(TangentMap):
    """``A(L Cᵀ + D Rᵀ) = Σ_g D_g (X L_g) C_gᵀ + Σ_g D_g (X D_g) R_gᵀ`` and its adjoint as four (N, K) matrix
    products over the ``K`` active singular pairs ``(g, j)`` (padding columns are skipped); ``G = (X L) ∘ D`` is
    formed once per Jacobian."""

    def __init__(self, op: GatedMLPOperator, jac: TangentJacobian) -> None:
        k, d, r = jac.left.shape
        self.op, self.x, self.x_t, self.shape = op, op.x, op.x_t, (k, d, r, op.n_outputs)
        self.pairs = jac.columns.reshape(-1).nonzero().squeeze(-1)  # flat indices g·r + j of the active pairs
        block = jac.index[self.pairs // r] if r else jac.index[:0]
        self.masks = op.masks[:, block]  # (N, K)
        left = jac.left.permute(1, 0, 2).reshape(d, k * r)[:, self.pairs]
        self.g = (op.x @ left).mul_(self.masks)
        self.right = jac.right.mT.reshape(k * r, op.n_outputs)[self.pairs]  # row (g, j) is R_g[:, j]

    def astype(self, dtype: torch.dtype) -> _GatedTangent | None:
        """The map with its data, masks and factors in ``dtype`` (the data from the operator's own copy; ``None``
        where they do not fit in it)."""
        op = self.op.astype(dtype)
        if op is None:
            return None
        out = copy.copy(self)
        out.op, out.x, out.x_t = op, op.x, op.x_t
        out.masks, out.g, out.right = self.masks.to(dtype), self.g.to(dtype), self.right.to(dtype)
        return out

    def _spread(self, cols: torch.Tensor, rows: int) -> torch.Tensor:
        """(rows, K) columns of the active pairs into the padded (k, rows, r) layout."""
        k, _, r, _ = self.shape
        out = cols.new_zeros(rows, k * r)
        out[:, self.pairs] = cols
        return out.view(rows, k, r).permute(1, 0, 2)

    def project(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _, d, _, c = self.shape
        hl = self._spread(y.T @ self.g, c)  # H_gᵀ L_g = yᵀ D_g X L_g
        hr = self._spread(self.x_t @ (y @ self.right.T).mul_(self.masks), d)  # H_g R_g = Xᵀ D_g y R_g
        return hl, hr

    def lift(self, c: torch.Tensor, d: torch.Tensor | None) -> torch.Tensor:
        k, n_features, r, n_outputs = self.shape
        out = self.g @ c.mT.reshape(k * r, n_outputs)[self.pairs]
        if d is None:
            return out
        xd = (self.x @ d.permute(1, 0, 2).reshape(n_features, k * r)[:, self.pairs]).mul_(self.masks)
        return out.addmm_(xd, self.right)
