"""Convex self-attention heads with global average pooling (GAP) over tokens inside the loss.

Sahiner et al. (2022), Theorem 3.1 (linear attention) and the gated-ReLU analogue of Theorem 3.3 (derived
here: fixed gates, plain nuclear norms). Inputs ``X`` are (N, s, d); a head maps ``X_i`` to an (s, c) output whose
token mean is the logit vector, so every operator here returns (N, c).

Index convention (fixed here; it gives Thm 3.1's blocks). The lifted variable of one pattern is the (d², d·c) matrix
``Z = Σ_h vec_F(W1_h) vec_F(W2_hᵀ)ᵀ`` for merged weights ``W1 = QKᵀ`` (d, d) and ``W2 = VW`` (d, c); its block
``Z^{(k,l)} = Z[k*d:(k+1)*d, l*c:(l+1)*c] = Σ_h W1_h[:, k] W2_h[l, :]``, i.e. with ``Z4 = Z.reshape(d, d, d, c)``
the entry ``Z4[k, a, l, b] = Σ_h W1_h[a, k] W2_h[l, b]``. Equivalently, ``Z.reshape(d³, c)`` has row ``(k, a, l)``.

GAP contraction (derived here). With ``P_j = M_jᵀ X`` (s, d),
``mean_t [Σ_{k,l} diag(g_j[:, k, l]) X Z_j^{(k,l)}] = φ_j · Z_j.reshape(d³, c)`` where
``φ_j[k, a, l] = (1/s) Σ_t X[t, k] P_j[t, a] X[t, l]``. For linear attention (``M = 1``) this is
``φ[k, a, l] = G[k, l] · mean_t X[t, a]`` with ``G = XᵀX``, so the linear operator is one GEMM of the (N, d²) Gram
matrices with ``Z`` permuted, contracted with the token means: ``O(N·d³·c)`` and no (N, d³) features. The gated
operator is one GEMM of its per-sample features (never ``X ⊗ X``) with ``Z`` reshaped; they cost ``O(s·d³)`` per
sample and pattern, are cached when small and otherwise recomputed chunk by chunk.

Scale. The data are used as given: nothing is rescaled silently. The optional ``scale`` multiplies the
attention scores, ``scale · X W1 Xᵀ`` (e.g. ``1/s`` for a mean-normalised Gram matrix, or the paper's ``1/√d``); it
is recorded on the operator and must be passed to the non-convex twin. Rescaling the model by ``scale`` is equivalent
to rescaling β; objectives are always computed on the data as given.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from . import features as feature_limits
from .features import CHUNK_LIMIT, FeatureOperator, check_x

__all__ = [
    "LinearAttentionOperator",
    "GatedAttentionOperator",
    "attention_masks",
    "sample_attention_gates",
]


def sample_attention_gates(
    n_features: int, n_gates: int, seed: int, dtype: torch.dtype = torch.float64
) -> torch.Tensor:
    """``n_gates`` i.i.d. standard Gaussian gate matrices ``U_j`` (m, d, d)."""
    if n_gates < 1:
        raise ValueError(f"n_gates must be >= 1, got {n_gates}")
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    return torch.randn(n_gates, n_features, n_features, generator=gen, dtype=dtype)


def attention_masks(x: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
    """Token-pair masks ``M[n, j, t, t'] = 1{x_tᵀ U_j x_t' ≥ 0}`` (N, m, s, s) in the dtype of ``x``.

    These are the arrangement patterns of Thm 3.3 for fixed gates: ``(X⊗X) vec_F(U) = vec_F(X U Xᵀ)``.
    """
    if x.ndim != 3 or gates.ndim != 3 or gates.shape[1:] != (x.shape[2], x.shape[2]):
        raise ValueError(f"expected X (N, s, d) and gates (m, d, d), got {tuple(x.shape)} and {tuple(gates.shape)}")
    u = gates.to(dtype=x.dtype, device=x.device)
    xu = torch.einsum("nta,jab->njtb", x, u)
    return (xu @ x.unsqueeze(1).transpose(-1, -2) >= 0).to(x.dtype)


class LinearAttentionOperator(FeatureOperator):
    """Linear self-attention with GAP (Sahiner et al. Thm 3.1, eq. (13)).

    ``A(Z)_i = mean_t [X_i Σ_{k,l} G_i[k,l] Z^{(k,l)}]`` with ``G_i = scale · X_iᵀX_i`` and ``Z`` (d², d·c);
    equal to the token mean of ``Σ_h scale · (X W1_h Xᵀ) X W2_h`` at ``Z = Σ_h vec_F(W1_h) vec_F(W2_hᵀ)ᵀ``.
    Pair with :class:`~attnduality.convex.penalties.NuclearNorm`.
    """

    def __init__(self, x: torch.Tensor, n_outputs: int, scale: float = 1.0, cache: bool | None = None) -> None:
        check_x(x)
        d = int(x.shape[2])
        self.n_features_lifted = d**3
        self.per_sample_work = d**3 + d * d
        self.z_shape = (d * d, d * int(n_outputs))
        self._setup(x, n_outputs, False, scale)  # the d³ features are only formed on request (features())
        n = self.n_samples
        self._gram_chunk = max(1, CHUNK_LIMIT // (d * d + d * self.n_outputs))
        if cache is None:  # ``cache`` decides whether the (N, d²) Gram matrices are kept
            cache = n * d * d <= feature_limits.CACHE_LIMIT
        self._grams = self._gram(0, n) if cache else None

    def _gram(self, lo: int, hi: int) -> torch.Tensor:
        """``scale · X_iᵀX_i`` flattened to (n, d²) [(k, l)], and the token means (n, d) [a], side by side."""
        x = self.x[lo:hi]
        gram = self.scale * (x.transpose(1, 2) @ x)
        return torch.cat([gram.reshape(hi - lo, -1), x.mean(dim=1)], dim=1)

    def _gram_chunks(self) -> Iterator[tuple[int, int, torch.Tensor, torch.Tensor]]:
        d2 = self.n_features**2
        if self._grams is not None:
            yield 0, self.n_samples, self._grams[:, :d2], self._grams[:, d2:]
            return
        for lo in range(0, self.n_samples, self._gram_chunk):
            hi = min(lo + self._gram_chunk, self.n_samples)
            both = self._gram(lo, hi)
            yield lo, hi, both[:, :d2], both[:, d2:]

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """``Σ_{k,a,l} G_i[k,l] x̄_i[a] Z4[k,a,l,:]`` as one GEMM over the Gram matrices: ``(G_i · Z4[k,·,l,·])``
        contracted with the token mean; ``O(N·d³·c)`` without the (N, d³) features."""
        d, c = self.n_features, self.n_outputs
        zp = z.reshape(d, d, d, c).permute(0, 2, 1, 3).reshape(d * d, d * c)  # [(k, l), (a, b)]
        out = torch.empty(self.n_samples, c, dtype=self.dtype, device=self.device)
        for lo, hi, gram, xbar in self._gram_chunks():
            out[lo:hi] = torch.einsum("na,nab->nb", xbar, (gram @ zp).reshape(hi - lo, d, c))
        return out

    def adjoint(self, g: torch.Tensor) -> torch.Tensor:
        """``Z4[k,a,l,b] = Σ_i G_i[k,l] x̄_i[a] g_i[b]``: one GEMM of the Gram matrices with ``x̄ ⊗ g``."""
        d, c = self.n_features, self.n_outputs
        acc = torch.zeros(d * d, d * c, dtype=self.dtype, device=self.device)
        for lo, hi, gram, xbar in self._gram_chunks():
            outer = (xbar[:, :, None] * g[lo:hi, None, :]).reshape(hi - lo, d * c)
            acc += (outer.T @ gram).T
        return acc.reshape(d, d, d, c).permute(0, 2, 1, 3).reshape(self.z_shape)

    def _features(self, lo: int, hi: int) -> torch.Tensor:
        x = self.x[lo:hi]
        gram = self.scale * (x.transpose(1, 2) @ x)  # (n, d, d) [k, l]
        xbar = x.mean(dim=1)  # (n, d) [a]
        return (gram.unsqueeze(2) * xbar[:, None, :, None]).reshape(hi - lo, -1)  # [k, a, l]

    def token_outputs(self, z: torch.Tensor) -> torch.Tensor:
        """The per-token outputs ``X_i Σ_{k,l} G_i[k,l] Z^{(k,l)}`` (N, s, c) before pooling (eq. (13))."""
        d, c = self.n_features, self.n_outputs
        gram = self.scale * (self.x.transpose(1, 2) @ self.x)
        w = torch.einsum("nkl,kalb->nab", gram, z.reshape(d, d, d, c))
        return self.x @ w


class GatedAttentionOperator(FeatureOperator):
    """Gated-ReLU self-attention with GAP (gated analogue of Sahiner et al. Thm 3.3, derived here).

    ``A(Z)_i = mean_t Σ_j Σ_{k,l} diag(g_{ij}[:, k, l]) X_i Z_j^{(k,l)}`` with
    ``g_{ij}[t, k, l] = scale · Σ_t' M_{ij}[t, t'] X_i[t', k] X_i[t', l]`` and masks
    ``M_{ij}[t, t'] = 1{x_tᵀ U_j x_t' ≥ 0}`` from fixed gates ``U`` (m, d, d); ``Z`` is (m, d², d·c). Equal to the
    token mean of ``Σ_j Σ_h (M_j ⊙ scale · X W1_{jh} Xᵀ) X W2_{jh}``. Pair with
    :class:`~attnduality.convex.penalties.BlockNuclearNorm`. Masks are recomputed from the gates (never stored
    beyond one chunk), so a new operator on test data with the same gates gives test-time predictions.
    """

    def __init__(
        self,
        x: torch.Tensor,
        gates: torch.Tensor,
        n_outputs: int,
        scale: float = 1.0,
        cache: bool | None = None,
    ) -> None:
        check_x(x)
        s, d = int(x.shape[1]), int(x.shape[2])
        if gates.ndim != 3 or gates.shape[1:] != (d, d):
            raise ValueError(f"gates must be (m, {d}, {d}), got {tuple(gates.shape)}")
        self.gates = gates.to(dtype=x.dtype, device=x.device)
        self.n_gates = int(gates.shape[0])
        self.n_features_lifted = self.n_gates * d**3
        self.per_sample_work = self.n_gates * (s * s + s * d * d + d**3)
        self.z_shape = (self.n_gates, d * d, d * int(n_outputs))
        self._setup(x, n_outputs, cache, scale)

    def masks(self, lo: int = 0, hi: int | None = None) -> torch.Tensor:
        """``M[n, j, t, t']`` for samples ``lo:hi`` (n, m, s, s)."""
        return attention_masks(self.x[lo:hi], self.gates)

    def _features(self, lo: int, hi: int) -> torch.Tensor:
        x = self.x[lo:hi]
        n, s, d = x.shape
        p = torch.einsum("njtu,nta->njua", self.masks(lo, hi), x)  # P_j = M_jᵀ X, (n, m, s, d) [u, a]
        xp = (x[:, None, :, :, None] * p[:, :, :, None, :]).reshape(n, self.n_gates, s, d * d)  # [u, (k, a)]
        phi = xp.transpose(-1, -2) @ x.unsqueeze(1)  # (n, m, d², d) [(k, a), l]
        return (self.scale / s) * phi.reshape(n, -1)

    def local_grams(self, lo: int = 0, hi: int | None = None) -> torch.Tensor:
        """``g[n, j, t, k, l] = scale · Σ_t' M_{nj}[t, t'] X_n[t', k] X_n[t', l]`` (eq. (16), diagonal form)."""
        x = self.x[lo:hi]
        return self.scale * torch.einsum("njtu,nuk,nul->njtkl", self.masks(lo, hi), x, x)

    def token_outputs(self, z: torch.Tensor) -> torch.Tensor:
        """The per-token outputs ``Σ_j Σ_{k,l} diag(g_j[:, k, l]) X Z_j^{(k,l)}`` (N, s, c) before pooling."""
        d, c = self.n_features, self.n_outputs
        xz = torch.einsum("nta,jkalb->njtklb", self.x, z.reshape(self.n_gates, d, d, d, c))
        return torch.einsum("njtkl,njtklb->ntb", self.local_grams(), xz)
