"""The gated self-attention operator on streamed token features, for paper-scale problems.

Same operator as :class:`~attnduality.convex.operators.attention.GatedAttentionOperator` (Sahiner et al., gated
analogue of Thm 3.3, derived here), ``A(Z)_i = Σ_j φ_ij · Z_j``, with the per-sample features
``φ_ij[(k, a), l] = (scale/s) Σ_u X[u, k] P_j[u, a] X[u, l]`` and ``P_j = M_jᵀ X`` (as in :mod:`.attention`), but the
samples come chunk by chunk from a :class:`~attnduality.convex.streaming.TokenSource` and nothing of size ``N·d³`` is
ever formed.
It offers the three products a subspace solver needs:

* :meth:`subspace_features`: for an orthonormal left basis ``Q_j`` (d², k) of each block, the reduced features
  ``H_ij[q, l] = Σ_{(k,a)} Q_j[(k,a), q] φ_ij[(k,a), l] = (scale/s) Σ_u α_u X[u, l]`` with
  ``α_u = x_uᵀ reshape(Q_j[:, q]) p_u``, at ``O(s·d²·k)`` per sample and block instead of ``O(s·d³)``; then
  ``A(Q Bᵀ)_i[b] = Σ_{j,q,l} H_ij[q, l] B_j[(l, b), q]``;
* :meth:`adjoint`: the dense ``A*G`` (m, d², d·c), using the symmetry of ``φ`` in ``(k, l)``: only the
  ``d(d+1)/2`` pairs ``k ≤ l`` are formed and multiplied (half the ``s·d³`` and ``d³·c`` work per sample);
* :meth:`forward`: ``A(Z)`` for a dense ``Z`` (for tests and small problems).
"""

from __future__ import annotations

import torch

from ..streaming import TokenSource
from .attention import attention_masks

__all__ = ["StreamedGatedAttention"]

_CHUNK_ENTRIES = 1 << 25  # intermediate entries per chunk (256 MiB in float64, 128 MiB in float32)
_BLOCK_ENTRIES = 1 << 28  # pair-feature entries per GEMM block of the adjoint (1 GiB in float32)
_CACHE_ENTRIES = 1 << 22  # intermediate entries per inner step (16 MiB in float32)


class StreamedGatedAttention:
    """Gated self-attention with GAP over a :class:`~attnduality.convex.streaming.TokenSource` (see the module)."""

    def __init__(
        self,
        source: TokenSource,
        gates: torch.Tensor,
        n_outputs: int,
        scale: float = 1.0,
        dtype: torch.dtype = torch.float64,
        chunk_size: int | None = None,
        progress: bool = False,
    ) -> None:
        d = source.n_features
        if gates.ndim != 3 or gates.shape[1:] != (d, d):
            raise ValueError(f"gates must be (m, {d}, {d}), got {tuple(gates.shape)}")
        if int(n_outputs) < 1:
            raise ValueError(f"n_outputs must be >= 1, got {n_outputs}")
        self.source = source
        self.gates = gates.to(dtype)
        self.n_gates, self.n_features, self.n_tokens = int(gates.shape[0]), d, source.n_tokens
        self.n_samples, self.n_outputs = source.n_samples, int(n_outputs)
        self.scale, self.dtype, self.progress = float(scale), dtype, bool(progress)
        self.z_shape = (self.n_gates, d * d, d * self.n_outputs)
        s, m = self.n_tokens, self.n_gates
        pairs = d * (d + 1) // 2
        per_sample = max(m * s * s, s * pairs, m * pairs * d)
        self.chunk_size = int(chunk_size) if chunk_size else max(1, _CHUNK_ENTRIES // per_sample)
        self.block_size = max(self.chunk_size, _BLOCK_ENTRIES // (pairs * m * d))
        k, l = torch.triu_indices(d, d)
        self._pair_k, self._pair_l = k, l
        self._pair_offsets = [i * d - i * (i - 1) // 2 for i in range(d)]  # first pair of row k in triu order

    def subset(self, stop: int) -> StreamedGatedAttention:
        """The same head on the first ``stop`` samples (same gates, scale and chunking)."""
        return StreamedGatedAttention(
            self.source.prefix(stop), self.gates, self.n_outputs, self.scale, self.dtype, self.chunk_size, self.progress
        )

    # --- pieces -------------------------------------------------------------------------------------------
    def _chunks(self, stop: int | None, what: str):
        return self.source.chunks(self.chunk_size, self.dtype, stop, what if self.progress else None)

    def _masked(self, x: torch.Tensor) -> torch.Tensor:
        """``P_j = M_jᵀ X`` (n, m, s, d) [u, a]."""
        return torch.einsum("njtu,nta->njua", attention_masks(x, self.gates), x)

    def subspace_features(self, basis: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """``H`` (k, N, m, d) for a left basis (m, d², k) of every block (written into ``out`` when given).

        Per chunk and gate: one GEMM ``X Q_j`` ((n·s, d) × (d, d·k)), then ``α_u = p_uᵀ (X Q_j)_u`` as a batched
        (1, d) × (d, k) product, small enough per chunk to stay in cache (a single einsum over all of it was 7× slower).
        """
        m, d, s = self.n_gates, self.n_features, self.n_tokens
        if basis.ndim != 3 or basis.shape[:2] != (m, d * d):
            raise ValueError(f"basis must be (m, d², k) = ({m}, {d * d}, k), got {tuple(basis.shape)}")
        k = basis.shape[2]
        if out is None:
            out = torch.empty(k, self.n_samples, m, d, dtype=self.dtype)
        q = basis.to(self.dtype).reshape(m, d, d * k)  # [j, k, (a, q)]
        step = max(1, min(self.chunk_size, _CACHE_ENTRIES // (s * d * k)))
        for lo, hi, x in self._chunks(None, "subspace features"):
            for a in range(0, hi - lo, step):
                xc = x[a : a + step]
                n = xc.shape[0]
                p = self._masked(xc)  # (n, m, s, a)
                alpha = torch.empty(n, m, s, 1, k, dtype=self.dtype)
                for j in range(m):
                    xq = (xc.reshape(n * s, d) @ q[j]).view(n, s, d, k)
                    torch.matmul(p[:, j].unsqueeze(-2), xq, out=alpha[:, j])
                out[:, lo + a : lo + a + n] = (self.scale / s) * torch.einsum("njuq,nul->qnjl", alpha[:, :, :, 0], xc)
        return out

    def adjoint_pairs(self, g: torch.Tensor, stop: int | None = None) -> torch.Tensor:
        """``A*G`` in pair form (m, d(d+1)/2, d, c) [j, (k ≤ l), a, b], over samples ``0:stop``.

        Samples are read in blocks of :attr:`block_size`. Per few samples, the pair products ``x_uk x_ul`` (k ≤ l)
        are formed once for all gates, and one batched GEMM with ``[P_1 … P_m]`` gives the pair features
        (n, pairs, m·d); per block they are multiplied by ``G`` in one GEMM (a small inner dimension would make the
        accumulator traffic, not the flops, the cost). About 2.2× faster than one GEMM per gate and pair row.
        """
        m, d, s, c = self.n_gates, self.n_features, self.n_tokens, self.n_outputs
        if g.shape != (self.n_samples, c):
            raise ValueError(f"g must be (N, c) = ({self.n_samples}, {c}), got {tuple(g.shape)}")
        g = g.to(self.dtype)
        pairs = self._pair_k.numel()
        acc = torch.zeros(pairs * m * d, c, dtype=self.dtype)
        block = self.block_size
        step = max(1, min(8, _CACHE_ENTRIES // (pairs * s)))
        phi = torch.empty(block, pairs, m * d, dtype=self.dtype)
        xx = torch.empty(step, pairs, s, dtype=self.dtype)
        for lo, hi, x in self.source.chunks(block, self.dtype, stop, "adjoint" if self.progress else None):
            n = hi - lo
            for a in range(0, n, step):
                xc = x[a : a + step]
                b = xc.shape[0]
                p = torch.einsum("njtu,nta->nuja", attention_masks(xc, self.gates), xc).reshape(b, s, m * d)
                xt = xc.mT.contiguous()  # (b, d, s)
                for k, off in enumerate(self._pair_offsets):  # rows (k, l ≥ k) of x_uk x_ul
                    torch.mul(xt[:, k : k + 1], xt[:, k:], out=xx[:b, off : off + d - k])
                torch.bmm(xx[:b], p, out=phi[a : a + b])
            acc.addmm_(phi[:n].reshape(n, -1).T, g[lo:hi])
        acc.mul_(self.scale / s)
        return acc.view(pairs, m, d, c).permute(1, 0, 2, 3)

    def expand_pairs(self, pairs: torch.Tensor, j: int, out: torch.Tensor | None = None) -> torch.Tensor:
        """Block ``j`` of the pair form as the (d², d·c) matrix ``[(k, a), (l, b)]`` (written into ``out`` when given).

        Two strided copies per row ``k`` of pairs, ``(k, ·, l ≥ k, ·)`` and its mirror ``(l > k, ·, k, ·)``: 5× less
        time than gathering all ``d²`` pairs by index and permuting the result."""
        d, c = self.n_features, self.n_outputs
        block = pairs[j]  # (pairs, a, b)
        if out is None:
            out = torch.empty(d * d, d * c, dtype=block.dtype)
        if out.shape != (d * d, d * c) or not out.is_contiguous():
            raise ValueError(f"out must be a contiguous ({d * d}, {d * c}) matrix, got {tuple(out.shape)}")
        full = out.view(d, d, d, c)  # [k, a, l, b]
        for k, off in enumerate(self._pair_offsets):
            rows = block[off : off + d - k]  # pairs (k, l) for l = k … d-1: (l, a, b)
            full[k, :, k:].copy_(rows.transpose(0, 1))
            full[k + 1 :, :, k].copy_(rows[1:])
        return out

    def adjoint(self, g: torch.Tensor, stop: int | None = None) -> torch.Tensor:
        """The dense ``A*G`` (m, d², d·c) (over samples ``0:stop``)."""
        pairs = self.adjoint_pairs(g, stop)
        d, c = self.n_features, self.n_outputs
        out = torch.empty(self.n_gates, d * d, d * c, dtype=self.dtype)
        for j in range(self.n_gates):
            self.expand_pairs(pairs, j, out=out[j])
        return out

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """``A(Z)`` (N, c) for a dense ``Z`` (m, d², d·c)."""
        m, d, s, c = self.n_gates, self.n_features, self.n_tokens, self.n_outputs
        if z.shape != self.z_shape:
            raise ValueError(f"z must be {self.z_shape}, got {tuple(z.shape)}")
        zf = z.to(self.dtype).reshape(m, d, d, d, c)  # [j, k, a, l, b]
        out = torch.empty(self.n_samples, c, dtype=self.dtype)
        for lo, hi, x in self._chunks(None, "forward"):
            p = self._masked(x)
            phi = torch.einsum("nuk,njua,nul->njkal", x, p, x)
            out[lo:hi] = (self.scale / s) * torch.einsum("njkal,jkalb->nb", phi, zf)
        return out
