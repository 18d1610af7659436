"""Dense linear algebra shared by the solvers: orthonormalisation, top singular pairs by block Krylov iteration, and
the algebra of low-rank factors ``Z = U Vᵀ``.

None forms a full SVD of a (p, q) matrix. :func:`top_singular_pairs` is Rayleigh–Ritz on a block Krylov subspace of
the Gram operator of the smaller side, grown by the Ritz residuals (block Davidson iteration without a
preconditioner, Davidson 1975) with thick restarts (Wu & Simon 2000); :func:`spectral_norm_power` is its ``k = 1``
case. :func:`factor_svd` reads the SVD of ``U Vᵀ`` from the r×r core of the QR factors of ``U`` and ``V``;
:func:`balanced_factors` gives the factors of least ``½(‖U‖_F² + ‖V‖_F²)`` (``= ‖Z‖_*``, the identity behind the
Burer–Monteiro parametrisation, Burer & Monteiro 2003); :func:`span_distance` measures how far vectors lie from the
column spaces of the factors.
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "balanced_factors",
    "factor_svd",
    "orthonormalize",
    "span_distance",
    "spectral_norm_power",
    "top_singular_pairs",
]

_DIRECT_N = 32  # below this small dimension the Gram matrix is formed and diagonalised directly


def orthonormalize(x: torch.Tensor, basis: torch.Tensor | None, gen: torch.Generator) -> torch.Tensor:
    """Orthonormal columns spanning ``x`` after removing its components along ``basis`` (twice, for stability).

    Columns that vanish (invariant subspace, or ``x`` already in the span) are replaced by random directions, so the
    result always has orthonormal columns orthogonal to ``basis``."""
    scale = torch.linalg.vector_norm(x, dim=-2, keepdim=True)
    for _ in range(2):
        if basis is not None and basis.shape[-1] > 0:
            x = x - basis @ (basis.mT @ x)
        norms = torch.linalg.vector_norm(x, dim=-2, keepdim=True)
        small = norms <= 1e3 * torch.finfo(x.dtype).eps * scale.clamp_min(torch.finfo(x.dtype).tiny)
        if bool(small.any()):
            noise = torch.randn(x.shape, generator=gen, dtype=x.dtype).to(x.device)
            x = torch.where(small, noise, x)
            scale = torch.where(small, torch.linalg.vector_norm(x, dim=-2, keepdim=True), scale)
            continue
        break
    if basis is not None and basis.shape[-1] > 0:
        x = x - basis @ (basis.mT @ x)
    q = torch.linalg.qr(x).Q
    if basis is not None and basis.shape[-1] > 0:  # a last pass: QR of nearly dependent columns loses orthogonality
        q = torch.linalg.qr(q - basis @ (basis.mT @ q)).Q
    return q


def top_singular_pairs(
    w: torch.Tensor,
    k: int = 1,
    n_iter: int = 300,
    tol: float = 1e-10,
    v0: torch.Tensor | None = None,
    block_size: int = 4,
    max_basis: int = 96,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The ``k`` largest singular values and vectors of every matrix of a batch ``w`` (…, m, n), never by a full SVD.

    Block Krylov (Davidson-type) iteration on the Gram operator ``x ↦ wᵀ(w x)`` of the smaller side, implicitly
    (``2 m n`` flops per vector, the Gram matrix is never formed unless ``min(m, n) ≤ 32``), with Rayleigh–Ritz on
    the whole basis, expansion by the Ritz residuals, and thick restarts at ``max_basis`` columns. It stops when the
    ``k`` top Ritz pairs of every block have residual ``‖wᵀw x − θ x‖ ≤ tol·θ_1``, so ``σ² = θ`` is accurate to
    ``tol`` relative (to ``tol²/gap`` when the top value is separated). ``v0`` (…, n, r): start vectors in the right
    singular space (e.g. the columns of ``V`` in ``Z = UVᵀ``), completed by ``block_size`` random ones.

    Returns ``(sigma (…, k), left (…, m, k), right (…, n, k))`` with ``w @ right ≈ left * sigma``, descending.
    Ritz values are lower bounds of the true ones: the estimate converges from below.
    """
    if w.ndim < 2:
        raise ValueError(f"w must be a (batch of) matrix, got shape {tuple(w.shape)}")
    lead, (m, n) = w.shape[:-2], w.shape[-2:]
    mat = w.reshape(-1, m, n)
    k = int(min(k, m, n))
    if k < 1:
        raise ValueError("k must be >= 1 and the matrices non-empty")
    if v0 is not None:
        v0 = v0.reshape(mat.shape[0], n, -1).to(dtype=w.dtype, device=w.device)
    transposed = m < n
    if transposed:  # work on the smaller side: the Gram operator acts on R^min(m, n)
        mat = mat.mT
        m, n = n, m
        v0 = None if v0 is None else mat.mT @ v0  # right vectors of wᵀ are w's left vectors: w v0 spans them
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    tol = max(float(tol), 10.0 * torch.finfo(w.dtype).eps)
    if n <= _DIRECT_N:
        evals, evecs = torch.linalg.eigh(mat.mT @ mat)
        theta = evals.flip(-1)[..., :k].clamp_min(0.0)
        right = evecs.flip(-1)[..., :k]
    else:
        theta, right = _block_krylov(mat, k, n_iter, tol, v0, block_size, max_basis, gen)
    sigma = theta.sqrt()
    left = mat @ right
    left = left / sigma.unsqueeze(-2).clamp_min(torch.finfo(w.dtype).tiny)
    if transposed:
        left, right = right, left
        m, n = n, m
    return sigma.reshape(*lead, k), left.reshape(*lead, m, k), right.reshape(*lead, n, k)


def _block_krylov(
    mat: torch.Tensor,
    k: int,
    n_iter: int,
    tol: float,
    v0: torch.Tensor | None,
    block_size: int,
    max_basis: int,
    gen: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    bsz, _, n = mat.shape
    dtype, device = mat.dtype, mat.device

    def gram(x: torch.Tensor) -> torch.Tensor:
        return mat.mT @ (mat @ x)

    n_rand = max(int(block_size), k)
    start = torch.randn(bsz, n, n_rand, generator=gen, dtype=dtype).to(device)
    if v0 is not None and v0.shape[-1] > 0:
        start = torch.cat([v0, start], dim=-1)
    b = min(start.shape[-1], n)
    max_basis = min(max(int(max_basis), 3 * b), n)
    q = orthonormalize(start[..., :b], None, gen)
    mq = gram(q)
    theta = torch.zeros(bsz, k, dtype=dtype, device=device)
    vecs = q[..., :k]
    for it in range(max(int(n_iter), 1)):
        t = q.mT @ mq
        evals, evecs = torch.linalg.eigh(0.5 * (t + t.mT))
        evals, evecs = evals.flip(-1), evecs.flip(-1)
        nb = min(b, evals.shape[-1])
        x = q @ evecs[..., :nb]
        mx = mq @ evecs[..., :nb]
        theta, vecs = evals[..., :k].clamp_min(0.0), x[..., :k]
        res = mx - x * evals[..., None, :nb]
        res_norm = torch.linalg.vector_norm(res[..., :k], dim=-2)
        top = theta[..., :1].clamp_min(torch.finfo(dtype).tiny)
        if it >= 2 and bool((res_norm <= tol * top).all()) or q.shape[-1] >= n:
            break
        if q.shape[-1] + nb > max_basis:  # thick restart on the leading Ritz vectors
            keep = max(min(q.shape[-1], max_basis // 2), nb)
            q, mq = q @ evecs[..., :keep], mq @ evecs[..., :keep]
        nb = min(nb, n - q.shape[-1])
        new = orthonormalize(res[..., :nb], q, gen)
        q = torch.cat([q, new], dim=-1)
        mq = torch.cat([mq, gram(new)], dim=-1)
    return theta, vecs


def spectral_norm_power(w: torch.Tensor, n_iter: int = 300, tol: float = 1e-10, **kwargs) -> torch.Tensor:
    """``‖w‖_2`` of every matrix of a batch (…, m, n) by block Krylov / power iteration (no SVD): shape (…).

    ``tol`` is the relative residual of the top Ritz pair of ``wᵀw`` at which to stop (floored at ``10·eps``); the
    value is then accurate to about ``tol`` relative or better. Keyword arguments go to :func:`top_singular_pairs`.
    """
    return top_singular_pairs(w, 1, n_iter=n_iter, tol=tol, **kwargs)[0][..., 0]


# ----------------------------------------------------------------------------------------------------------------
# low-rank factors Z = U Vᵀ
# ----------------------------------------------------------------------------------------------------------------
def factor_svd(left: torch.Tensor, right: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The SVD of ``U Vᵀ`` for every block of a batch of factors ``U`` (B, p, r) and ``V`` (B, q, r), from the r×r
    core: with ``U = Q_U R_U`` and ``V = Q_V R_V`` (reduced QR) and ``R_U R_Vᵀ = A S Bᵀ``, returns
    ``(P (B, p, r), s (B, r), W (B, q, r))`` with ``P = Q_U A``, ``W = Q_V B`` and ``U Vᵀ = P diag(s) Wᵀ``.

    Costs ``O((p + q) r²)`` per block instead of the ``O(p q min(p, q))`` of an SVD of ``U Vᵀ``."""
    qu, ru = torch.linalg.qr(left)
    qv, rv = torch.linalg.qr(right)
    a, s, bh = torch.linalg.svd(ru @ rv.mT)
    return qu @ a, s, qv @ bh.mT


def balanced_factors(left: torch.Tensor, right: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Balanced factors of the same ``Z_j = U_j V_jᵀ``: ``U_j = P_j S_j^{1/2}``, ``V_j = W_j S_j^{1/2}`` from
    :func:`factor_svd`, which minimise ``½(‖U_j‖_F² + ‖V_j‖_F²)`` (the minimum is ``‖Z_j‖_*``).

    Singular values at most ``10·eps·√r·s_max`` (``s_max`` the largest of all blocks) are dropped as numerically
    zero; all blocks keep the width of the block of largest remaining rank (at least 1), padded with zero columns.
    Returns width-0 factors when ``Z = 0``, and the inputs themselves when they have width 0."""
    if left.shape[-1] == 0:
        return left, right
    p, s, w = factor_svd(left, right)
    smax = float(s.max()) if s.numel() else 0.0
    if smax == 0.0:
        return left[..., :0], right[..., :0]
    thresh = 10.0 * torch.finfo(left.dtype).eps * math.sqrt(s.shape[-1]) * smax
    r = max(int((s > thresh).sum(-1).max()), 1)
    s = torch.where(s > thresh, s, torch.zeros_like(s))[..., :r].sqrt()
    return p[..., :r] * s.unsqueeze(-2), w[..., :r] * s.unsqueeze(-2)


def span_distance(left: torch.Tensor, right: torch.Tensor, uvec: torch.Tensor, vvec: torch.Tensor) -> torch.Tensor:
    """``max(‖(I − P_U) u‖, ‖(I − P_V) v‖)`` per block for unit vectors ``u`` (B, p[, k]) and ``v`` (B, q[, k]), with
    ``P_U``, ``P_V`` the orthogonal projectors onto the column spaces of ``U`` (B, p, r) and ``V`` (B, q, r): how far
    each pair ``(u, v)`` lies from the factors' column spaces (1 = orthogonal to both, 0 = inside both).

    Returns shape (B,) for vectors (B, p) and (B, q), else (B, k); all ones when the factors have width 0."""
    squeeze = uvec.ndim == 2
    if squeeze:
        uvec, vvec = uvec.unsqueeze(-1), vvec.unsqueeze(-1)
    if left.shape[-1] == 0:
        out = torch.ones(uvec.shape[0], uvec.shape[-1], dtype=uvec.dtype, device=uvec.device)
        return out[:, 0] if squeeze else out

    def dist(f: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        proj = f @ (torch.linalg.pinv(f.mT @ f, hermitian=True) @ (f.mT @ x))
        return torch.linalg.vector_norm(x - proj, dim=-2)

    out = torch.maximum(dist(left, uvec), dist(right, vvec))
    return out[:, 0] if squeeze else out
