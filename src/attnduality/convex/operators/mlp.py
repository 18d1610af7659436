"""The convex two-layer gated-ReLU network (Sahiner et al. eq. (8); Mishkin et al. 2022).

``A(Z) = Σ_j D_j X Z_j`` with ``D_j = diag(1{X g_j ≥ 0})`` and ``Z`` of shape (P, d, c).
"""

from __future__ import annotations

import torch

from .base import LinearOperator

__all__ = ["GatedMLPOperator"]


class GatedMLPOperator(LinearOperator):
    """``A(Z) = Σ_j D_j X Z_j`` for data ``X`` (N, d) and 0/1 masks ``D`` (N, P)."""

    def __init__(self, x: torch.Tensor, masks: torch.Tensor, n_outputs: int) -> None:
        if masks.shape[0] != x.shape[0]:
            raise ValueError(f"masks have {masks.shape[0]} rows but X has {x.shape[0]} samples")
        self.x = x
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

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        p, d, c = self.z_shape
        ws = self._workspace(p * c)
        if c == 1:
            torch.matmul(self.x, z[:, :, 0].T, out=ws)
            return ws.mul_(self.masks).sum(1, keepdim=True)
        torch.matmul(self.x, z.permute(1, 0, 2).reshape(d, p * c), out=ws)
        return torch.einsum("npc,np->nc", ws.view(-1, p, c), self.masks)

    def adjoint(self, g: torch.Tensor) -> torch.Tensor:
        p, d, c = self.z_shape
        ws = self._workspace(p * c)
        if c == 1:
            torch.mul(self.masks, g, out=ws)
            return (self.x.T @ ws).T.unsqueeze(-1)
        torch.mul(self.masks.unsqueeze(-1), g.unsqueeze(1), out=ws.view(-1, p, c))
        return (self.x.T @ ws).view(d, p, c).permute(1, 0, 2)

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
