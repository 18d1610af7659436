"""Dense linear algebra shared by the solvers: orthonormalisation and top singular pairs by block Krylov iteration.

Neither forms a full SVD: :func:`top_singular_pairs` works on the Gram operator of the smaller side, and
:func:`spectral_norm_power` is its ``k = 1`` case.
"""

from __future__ import annotations

import torch

__all__ = ["orthonormalize", "spectral_norm_power", "top_singular_pairs"]

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
