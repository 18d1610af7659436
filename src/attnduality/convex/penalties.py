"""Penalties ``R(Z)``: each supplies ``value``, ``prox`` (of ``t·R``) and the ``dual_norm`` used by certificates.

* :class:`GroupL2` — ``Σ_g ‖Z_g‖_2`` over groups formed by reducing some axes (group lasso; the convex
  gated-ReLU MLP of Sahiner et al. eq. (8) with one output, Mishkin et al.'s neuron-wise group ℓ1).
* :class:`NuclearNorm` — ``‖Z‖_*`` of one matrix (the linear heads, eq. (6) and Thm 3.1).
* :class:`BlockNuclearNorm` — ``Σ_j ‖Z_j‖_*`` over a leading batch of blocks (gated heads, eq. (8)).
* :class:`L1Norm` — ``Σ |Z|``.
* :class:`ConeGroupL2` — ``Σ_g ‖Z_g‖_2`` restricted to polyhedral cones (the convex ReLU network, eq. (5)).

``dual_norm`` is the support function of the unit ball ``sup_{R(Z) ≤ 1} ⟨W, Z⟩``: for the symmetric norms it is
the dual norm, for :class:`ConeGroupL2` the gauge ``max_g ‖P_{C_g}(W_g)‖``.

``prox_jacobian(W, t)`` returns an element of the generalized (Clarke) Jacobian of ``prox_{tR}`` at ``W`` as a
symmetric positive semidefinite linear map; the semismooth Newton solver
(:mod:`attnduality.convex.solvers.newton`) needs it. :class:`ConeGroupL2` has none (its prox is a projection
computed by NNLS), so cone-constrained problems stay with FISTA. The nuclear norms also give it in the factored
form of :class:`TangentJacobian` (``tangent_jacobian``), which lets an operator apply ``A J A*`` to low-rank factors.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from scipy.optimize import nnls

__all__ = [
    "Penalty",
    "ProxPoint",
    "TangentJacobian",
    "GroupL2",
    "NuclearNorm",
    "BlockNuclearNorm",
    "L1Norm",
    "ConeGroupL2",
    "get_penalty",
]


@dataclass(frozen=True)
class TangentJacobian:
    """A prox Jacobian ``J`` that is zero outside a few leading blocks and, on each of them, lives in the tangent space
    ``T_g = {L_g Cᵀ + D R_gᵀ}`` of the block's active singular subspaces: ``J = P_T J P_T``.

    ``left`` (k, m, r) and ``right`` (k, n, r) hold orthonormal columns (zero columns pad blocks of lower rank), and
    ``apply`` is ``J`` on the (k, m, n) blocks ``index``. ``J H`` then depends on ``H`` only through ``Hᵀ L`` and
    ``H R``, and its result is ``L Cᵀ + D Rᵀ``: an operator that can map such factors cheaply
    (:meth:`~attnduality.convex.operators.base.LinearOperator.tangent_map`) never forms ``A*`` or ``A`` of a full
    ``Z`` inside the Newton solver's conjugate gradients.
    """

    index: torch.Tensor
    """(k,) the leading blocks where ``J`` is not zero"""
    left: torch.Tensor
    """(k, m, r) orthonormal bases of the blocks' active left singular vectors"""
    right: torch.Tensor
    """(k, n, r) the same for the right singular vectors"""
    columns: torch.Tensor
    """(k, r) which columns of ``left`` and ``right`` are singular vectors (the others are zero padding)"""
    apply: Callable[[torch.Tensor], torch.Tensor]
    """``H ↦ J H`` on the (k, m, n) blocks ``index``"""
    apply_factors: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None
    """``(Hᵀ L, H R) ↦ (C, D)`` with ``J H = L Cᵀ + D Rᵀ``, without forming a (k, m, n) block (optional; both
    sides may carry leading batch dimensions)"""

    def to_tangent(self, c: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        """``P_T H`` from ``C = Hᵀ L`` (k, n, r) and ``D = H R`` (k, m, r): ``L Cᵀ + D Rᵀ − L (Lᵀ D) Rᵀ``."""
        left, right = self.left, self.right
        return left @ c.mT + (d - left @ (left.mT @ d)) @ right.mT

    def apply_to_factors(self, c: torch.Tensor, d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Factors of ``J H`` from ``C = Hᵀ L`` and ``D = H R``: :attr:`apply_factors` where there is one, else
        through the (k, m, n) blocks (:meth:`to_tangent`, :attr:`apply`, :meth:`from_tangent`)."""
        if self.apply_factors is not None:
            return self.apply_factors(c, d)
        return self.from_tangent(self.apply(self.to_tangent(c, d)))

    def from_tangent(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Factors ``(C, D)`` with ``H = L Cᵀ + D Rᵀ`` for ``H ∈ T``: ``C = Hᵀ L``, ``D = (I − L Lᵀ) H R``."""
        left = self.left
        c = h.mT @ left
        d = h @ self.right
        return c, d - left @ (left.mT @ d)


class ProxPoint:
    """``P = prox_{tR}(W)`` with the Jacobian of the prox at ``W``, for a solver that needs both at one point (the
    semismooth Newton solver): a penalty whose prox and Jacobian come from one decomposition (the nuclear norms: one
    SVD) computes it once. This generic form asks the penalty for each."""

    def __init__(self, penalty: Penalty, w: torch.Tensor, t: float) -> None:
        self.penalty, self.w, self.t = penalty, w, t
        self.prox = penalty.prox(w, t)

    def jacobian(self, index: torch.Tensor | None = None) -> Callable[[torch.Tensor], torch.Tensor]:
        """:meth:`Penalty.prox_jacobian` at ``W``, or at ``W[index]`` for leading blocks ``index`` of
        :meth:`active_blocks` (the Jacobian restricted to them)."""
        return self.penalty.prox_jacobian(self.w if index is None else self.w[index], self.t)

    def active_blocks(self) -> torch.Tensor | None:
        """:meth:`Penalty.active_blocks` at ``W``."""
        return self.penalty.active_blocks(self.w, self.t)

    def tangent(self, dtype: torch.dtype | None = None) -> TangentJacobian | None:
        """:meth:`Penalty.tangent_jacobian` at ``W``; with ``dtype``, the same ``J`` (its active set decided at
        ``W``'s precision) with its factors and weights in ``dtype``, for products at lower precision (``None`` where
        the penalty has no such form)."""
        jac = self.penalty.tangent_jacobian(self.w, self.t)
        return jac if dtype is None or dtype == self.w.dtype else None


class Penalty(ABC):
    """A convex, positively homogeneous penalty (a norm or a sum of norms)."""

    name: str = ""

    @abstractmethod
    def value(self, z: torch.Tensor) -> torch.Tensor:
        """``R(Z)`` as a 0-d tensor."""

    @abstractmethod
    def prox(self, z: torch.Tensor, t: float) -> torch.Tensor:
        """``argmin_W ½‖W − Z‖² + t·R(W)``."""

    @abstractmethod
    def dual_norm(self, w: torch.Tensor) -> torch.Tensor:
        """``R°(W) = sup_{R(Z) ≤ 1} ⟨W, Z⟩``; optimality of the regularised problem is ``R°(−∇f) ≤ β``."""

    def prox_jacobian(self, w: torch.Tensor, t: float) -> Callable[[torch.Tensor], torch.Tensor]:
        """``H ↦ J H`` for one ``J ∈ ∂prox_{tR}(W)`` (symmetric, ``0 ⪯ J ⪯ I``)."""
        raise NotImplementedError(f"{type(self).__name__} has no prox Jacobian: solve it with solver='fista'")

    @property
    def has_prox_jacobian(self) -> bool:
        return type(self).prox_jacobian is not Penalty.prox_jacobian

    def block_jacobian(self, w: torch.Tensor, t: float) -> tuple[torch.Tensor, torch.Tensor] | None:
        """``(a, u)`` with ``J_g = a_g I + u_g u_gᵀ`` on every leading block ``W[g]`` of a (P, d, 1) tensor, for the
        same ``J`` as :meth:`prox_jacobian`; ``a`` has shape (P,), ``u`` that of ``W``. ``None`` where ``J`` is not
        of that form (matrix blocks, other groupings): the explicit dual matrix of the Newton solver's
        preconditioner (:meth:`~attnduality.convex.operators.base.LinearOperator.dual_gram`) needs it."""
        return None

    def tangent_jacobian(self, w: torch.Tensor, t: float) -> TangentJacobian | None:
        """The same ``J`` as :meth:`prox_jacobian` in the factored form of :class:`TangentJacobian`, for a batch of
        (P, m, n) matrix blocks; ``None`` where the penalty has no such form (the default)."""
        return None

    def prox_point(self, w: torch.Tensor, t: float) -> ProxPoint:
        """``prox_{tR}(W)`` together with the Jacobian at ``W`` (:class:`ProxPoint`)."""
        return ProxPoint(self, w, t)

    def active_blocks(self, w: torch.Tensor, t: float) -> torch.Tensor | None:
        """For a penalty that is a sum over the leading blocks ``W[g]`` of a 3-D ``W``: the blocks where the prox at
        ``W`` (and its Jacobian) is not zero, so that :meth:`prox_jacobian` of ``W[index]`` is the Jacobian restricted
        to them. ``None`` where the penalty is not of that form (the default) or ``W`` is not finite (a non-finite
        block's prox does not vanish)."""
        return None


def _above(top: torch.Tensor, t: float) -> torch.Tensor | None:
    """The indices where the per-block norms ``top`` exceed ``t``; ``None`` if any is not finite."""
    return (top > t).nonzero().squeeze(-1) if bool(torch.isfinite(top).all()) else None


class GroupL2(Penalty):
    """``Σ_g ‖Z_g‖_2`` where a group collects all entries that share the indices of the axes not in ``axes``.

    ``GroupL2(axes=(1, 2))`` on a (P, d, c) tensor is one group per block; ``GroupL2(axes=(0,))`` on a (d, c)
    matrix is one group per column, ``GroupL2(axes=(1,))`` one group per row.
    """

    name = "group_l2"

    def __init__(self, axes: Sequence[int] = (-1,)) -> None:
        self.axes = tuple(int(a) for a in axes)

    def _norms(self, z: torch.Tensor) -> torch.Tensor:
        return torch.linalg.vector_norm(z, dim=self.axes, keepdim=True)

    def value(self, z: torch.Tensor) -> torch.Tensor:
        return self._norms(z).sum()

    def prox(self, z: torch.Tensor, t: float) -> torch.Tensor:
        norms = self._norms(z)
        scale = torch.clamp(1.0 - t / norms.clamp_min(torch.finfo(z.dtype).tiny), min=0.0)
        return z * scale

    def dual_norm(self, w: torch.Tensor) -> torch.Tensor:
        return self._norms(w).max()

    def prox_jacobian(self, w: torch.Tensor, t: float) -> Callable[[torch.Tensor], torch.Tensor]:
        """Block soft-thresholding: ``J_g = (1 − t/‖w_g‖) I + t w_g w_gᵀ / ‖w_g‖³`` where ``‖w_g‖ > t``, else 0."""
        norms = self._norms(w)
        active = norms > t
        safe = norms.clamp_min(torch.finfo(w.dtype).tiny)
        a = torch.where(active, 1.0 - t / safe, torch.zeros_like(norms))
        b = torch.where(active, t / safe**3, torch.zeros_like(norms))
        bw = b * w
        axes = self.axes

        def apply(h: torch.Tensor) -> torch.Tensor:
            return a * h + bw * (w * h).sum(dim=axes, keepdim=True)

        return apply

    def active_blocks(self, w: torch.Tensor, t: float) -> torch.Tensor | None:
        """The groups with ``‖W_g‖ > t``, where the groups are the leading blocks of a 3-D ``W``."""
        if w.ndim != 3 or {a % 3 for a in self.axes} != {1, 2}:
            return None
        return _above(torch.linalg.vector_norm(w, dim=(1, 2)), t)

    def block_jacobian(self, w: torch.Tensor, t: float) -> tuple[torch.Tensor, torch.Tensor] | None:
        """``a_g = 1 − t/‖w_g‖``, ``u_g = √t · w_g/‖w_g‖^{3/2}`` on active blocks (zero elsewhere) when the groups
        are the leading blocks of a (P, d, 1) tensor."""
        if w.ndim != 3 or w.shape[-1] != 1 or {a % 3 for a in self.axes} != {1, 2}:
            return None
        return _vector_block_jacobian(w, t)


def _vector_block_jacobian(w: torch.Tensor, t: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(a, u)`` of block soft-thresholding on the leading blocks of ``w`` (see :meth:`Penalty.block_jacobian`)."""
    norms = torch.linalg.vector_norm(w, dim=(1, 2))
    active = norms > t
    safe = norms.clamp_min(torch.finfo(w.dtype).tiny)
    a = torch.where(active, 1.0 - t / safe, torch.zeros_like(norms))
    scale = torch.where(active, math.sqrt(t) * safe.pow(-1.5), torch.zeros_like(norms))
    return a, w * scale[:, None, None]


def _is_vector_block(z: torch.Tensor) -> bool:
    return min(z.shape[-2], z.shape[-1]) == 1


def _lapack_svd(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``torch.linalg.svd(z, full_matrices=False)`` that never raises on a batch (…, m, n).

    Where LAPACK fails to converge on a finite float32 block (badly scaled data), the batch is decomposed again in
    float64 and cast back, so the result keeps ``z``'s dtype. Non-finite blocks (a diverging iterate) get NaN
    factors, which the solvers read as divergence like any other non-finite value; the other blocks are decomposed.
    """
    try:
        return torch.linalg.svd(z, full_matrices=False)
    except torch.linalg.LinAlgError:
        broken = ~torch.isfinite(z).all(dim=-1).all(dim=-1)
        if bool(broken.any()):
            u, s, vh = _lapack_svd(torch.where(broken[..., None, None], torch.zeros_like(z), z))
            nan = torch.tensor(float("nan"), dtype=z.dtype, device=z.device)
            return (
                torch.where(broken[..., None, None], nan, u),
                torch.where(broken[..., None], nan, s),
                torch.where(broken[..., None, None], nan, vh),
            )
        if z.dtype == torch.float64:
            raise
        u, s, vh = torch.linalg.svd(z.to(torch.float64), full_matrices=False)
        return u.to(z.dtype), s.to(z.dtype), vh.to(z.dtype)


def _lapack_svdvals(z: torch.Tensor) -> torch.Tensor:
    """``torch.linalg.svdvals(z)`` with the float64 retry and the NaN rule of :func:`_lapack_svd`."""
    try:
        return torch.linalg.svdvals(z)
    except torch.linalg.LinAlgError:
        broken = ~torch.isfinite(z).all(dim=-1).all(dim=-1)
        if bool(broken.any()):
            s = _lapack_svdvals(torch.where(broken[..., None, None], torch.zeros_like(z), z))
            return torch.where(broken[..., None], torch.tensor(float("nan"), dtype=z.dtype, device=z.device), s)
        if z.dtype == torch.float64:
            raise
        return torch.linalg.svdvals(z.to(torch.float64)).to(z.dtype)


def _svd(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Thin SVD of a batch (…, m, n); wide blocks through their transpose, so that both orientations cost the same."""
    if z.shape[-1] >= 2 * z.shape[-2]:
        u, s, vh = _thin_svd(z.mT)
        return vh.mT, s, u.mT
    return _thin_svd(z)


def _thin_svd(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Thin SVD of a batch (…, m, n) that is not wide. Tall blocks are first reduced by QR to their small square
    factor: LAPACK's batched SVD of tall blocks is several times slower than QR followed by an SVD of the n×n factor."""
    m, n = z.shape[-2], z.shape[-1]
    if m >= 2 * n:
        q, r = torch.linalg.qr(z)
        u, s, vh = _lapack_svd(r)
        return q @ u, s, vh
    return _lapack_svd(z)


def _svdvals(z: torch.Tensor) -> torch.Tensor:
    m, n = z.shape[-2], z.shape[-1]
    if m >= 2 * n:
        return _lapack_svdvals(torch.linalg.qr(z)[1])
    if n >= 2 * m:
        return _svdvals(z.mT)
    return _lapack_svdvals(z)


def _svt(z: torch.Tensor, t: float) -> torch.Tensor:
    """Singular-value soft-thresholding of a batch of matrices (…, m, n)."""
    if _is_vector_block(z):  # the nuclear norm of a vector is its ℓ2 norm
        return GroupL2(axes=(-2, -1)).prox(z, t)
    return _svt_from(*_svd(z), t, z)


def _svt_from(u: torch.Tensor, s: torch.Tensor, vh: torch.Tensor, t: float, z: torch.Tensor) -> torch.Tensor:
    """:func:`_svt` of ``z`` from its thin SVD."""
    s = torch.clamp(s - t, min=0.0)  # NaN (a non-finite block, see _lapack_svd) stays NaN ...
    keep = int((~(s <= 0)).sum(dim=-1).max()) if s.numel() else 0  # ... and is kept, so the block stays NaN
    if keep == 0:
        return torch.zeros_like(z)
    u, s, vh = u[..., :keep], s[..., :keep], vh[..., :keep, :]
    return (u * s.unsqueeze(-2)) @ vh


def _svt_jacobian(w: torch.Tensor, t: float) -> Callable[[torch.Tensor], torch.Tensor]:
    """An element of the generalized Jacobian of singular-value soft-thresholding at a batch ``W`` (…, m, n).

    Spectral-operator calculus (Ding, Sun & Toh 2014; Jiang, Sun & Toh 2013): for ``m ≤ n`` and
    ``W = U Σ V₁ᵀ``, with ``g(σ) = (σ − t)_+`` and ``Ã = Uᵀ H V₁``,
    ``J H = U [Ω₁ ∘ sym(Ã) + Ω₂ ∘ skew(Ã)] V₁ᵀ + U diag(g(σ)/σ) Uᵀ H (I − V₁V₁ᵀ)`` where
    ``Ω₁[i, j] = (g_i − g_j)/(σ_i − σ_j)`` (1 where both exceed ``t``, 0 where neither does) and
    ``Ω₂[i, j] = (g_i + g_j)/(σ_i + σ_j)``. The map is applied with the full thin SVD: two batched products with
    ``U`` and two with ``V₁`` per application.
    """
    if _is_vector_block(w):
        return GroupL2(axes=(-2, -1)).prox_jacobian(w, t)
    return _svt_jacobian_from(*_svd(w), t)


def _svt_jacobian_from(
    u: torch.Tensor, s: torch.Tensor, vh: torch.Tensor, t: float
) -> Callable[[torch.Tensor], torch.Tensor]:
    """:func:`_svt_jacobian` from the thin SVD of ``W``: tall blocks through the SVD of their transpose."""
    if u.shape[-2] > vh.shape[-1]:
        inner = _svt_jacobian_map(vh.mT, u.mT, _svt_weights(s, t))
        return lambda h: inner(h.mT).mT
    return _svt_jacobian_map(u, vh, _svt_weights(s, t))  # m ≤ n: u (…, m, m), s (…, m), vh (…, m, n)


def _svt_weights(s: torch.Tensor, t: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(Ω₁, Ω₂, g/σ)`` of :func:`_svt_jacobian` from the singular values ``s`` (…, m) of wide blocks."""
    g = (s - t).clamp_min(0.0)
    act = s > t
    si, sj = s.unsqueeze(-1), s.unsqueeze(-2)
    gi, gj = g.unsqueeze(-1), g.unsqueeze(-2)
    ai, aj = act.unsqueeze(-1), act.unsqueeze(-2)
    tiny = torch.finfo(s.dtype).tiny
    mixed = (gi - gj) / torch.where(ai == aj, torch.ones_like(si - sj), si - sj)
    om1 = torch.where(ai & aj, torch.ones_like(mixed), torch.where(~ai & ~aj, torch.zeros_like(mixed), mixed))
    den = si + sj
    om2 = torch.where(den > tiny, (gi + gj) / den.clamp_min(tiny), torch.zeros_like(den))
    om3 = torch.where(s > tiny, g / s.clamp_min(tiny), torch.zeros_like(s))
    return om1, om2, om3


def _cast(dtype: torch.dtype | None, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    return tensors if dtype is None else tuple(x.to(dtype) for x in tensors)


def _svt_jacobian_map(
    u: torch.Tensor,
    vh: torch.Tensor,
    weights: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    dtype: torch.dtype | None = None,
) -> Callable[[torch.Tensor], torch.Tensor]:
    """:func:`_svt_jacobian` from the thin SVD factors ``U``, ``V₁ᵀ`` of a batch of wide (m ≤ n) blocks and the
    :func:`_svt_weights` of their singular values (computed at the SVD's precision); the map works in ``dtype``
    (``None``: the SVD's)."""
    u, vh, om1, om2, om3 = _cast(dtype, u, vh, *weights)
    v = vh.mT

    def apply(h: torch.Tensor) -> torch.Tensor:
        uh = u.mT @ h  # (…, m, n)
        a = uh @ v  # (…, m, m)
        sym, skew = 0.5 * (a + a.mT), 0.5 * (a - a.mT)
        core = om1 * sym + om2 * skew
        rest = uh - a @ vh  # Uᵀ H (I − V₁V₁ᵀ)
        return u @ (core @ vh + om3.unsqueeze(-1) * rest)

    return apply


def _svt_factor_map(
    u: torch.Tensor,
    vh: torch.Tensor,
    weights: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    act: torch.Tensor,
    rank: int,
    dtype: torch.dtype | None = None,
) -> Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """:func:`_svt_jacobian_map` on tangent factors of wide blocks: ``(Hᵀ L, H R) ↦ (C, D)`` with
    ``J H = L Cᵀ + D Rᵀ``, ``L``, ``R`` the first ``rank`` columns of ``U``, ``V₁`` (masked to the active ones).

    ``J H = U M V₁ᵀ + L diag(g/σ) Lᵀ H (I − V₁V₁ᵀ)`` with ``M = Ω₁∘sym(Ã) + Ω₂∘skew(Ã)``, and ``M`` needs ``Ã =
    Uᵀ H V₁`` only in the rows and columns of active singular values (the weights vanish elsewhere): the rows are
    ``(Hᵀ L)ᵀ V₁``, the columns ``Uᵀ (H R)``. So ``C = V₁ M[:r]ᵀ + (I − V₁V₁ᵀ) Hᵀ L diag(g/σ)`` and ``D`` is
    ``U M[:, :r]`` with the active rows of ``M`` dropped; every product is (m or n) × m × r per block. ``weights``
    are :func:`_svt_weights` and ``act`` the mask ``σ > t``, both at the SVD's precision; the map works in ``dtype``
    (``None``: the SVD's)."""
    om1, om2, om3 = weights
    # M = W_a∘Ã + W_b∘Ãᵀ with W_a = (Ω₁ + Ω₂)/2, W_b = (Ω₁ − Ω₂)/2. Its active rows i need Ã[i, :] = (Hᵀ L)ᵀ V₁ and
    # Ã[:, i] = Uᵀ (H R) (both exact where i is active); its columns j < r at inactive rows i need Ã[i, j] = Uᵀ (H R)
    # and Ã[j, i] = (Hᵀ L)ᵀ V₁ (the weights vanish unless j is active). Masking the weights keeps padding out of C and
    # active rows out of D.
    w_a, w_b = 0.5 * (om1 + om2), 0.5 * (om1 - om2)
    rows = act[..., :rank, None].to(om3.dtype)  # (k, r, 1)
    inactive = (~act).to(om3.dtype).unsqueeze(-1)  # (k, m, 1)
    wa_rows, wb_rows = w_a[..., :rank, :] * rows, w_b[..., :rank, :] * rows
    wa_cols, wb_cols = w_a[..., :rank] * inactive, w_b[..., :rank] * inactive
    scale = om3[..., None, :rank]  # g/σ, zero at padding columns
    u, vh, wa_rows, wb_rows, wa_cols, wb_cols, scale = _cast(dtype, u, vh, wa_rows, wb_rows, wa_cols, wb_cols, scale)
    v = vh.mT

    def apply(hl: torch.Tensor, hr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x1 = u.mT @ hr  # Ã[:, :r]
        x2 = v.mT @ hl  # Ã[:r, :]ᵀ
        m_rows = wa_rows * x2.mT + wb_rows * x1.mT  # M[:r, :]
        m_cols = wa_cols * x1 + wb_cols * x2  # M[:, :r] at inactive rows
        # C = V₁ M[:r]ᵀ + (I − V₁V₁ᵀ) Hᵀ L diag(g/σ)
        return (v @ (m_rows.mT - x2 * scale)).add_(hl * scale), u @ m_cols

    return apply


def _svt_tangent_jacobian(w: torch.Tensor, t: float) -> TangentJacobian | None:
    """:func:`_svt_jacobian` of a (P, m, n) batch as a :class:`TangentJacobian`: ``J H`` has nonzero SVD-basis
    entries ``(i, j)`` only where ``σ_i > t`` or ``σ_j > t`` (``Ω₁``, ``Ω₂`` and ``g/σ`` vanish where neither is), so
    it lies in, and depends only on the projection onto, the tangent space of the active singular vectors."""
    if w.ndim != 3 or _is_vector_block(w):
        return None
    return _svt_tangent_from(*_svd(w), t)


def _svt_tangent_from(
    u: torch.Tensor, s: torch.Tensor, vh: torch.Tensor, t: float, dtype: torch.dtype | None = None
) -> TangentJacobian | None:
    """:func:`_svt_tangent_jacobian` from the thin SVD of a (P, m, n) batch ``W``; the active set and the weights are
    decided at the SVD's precision, the factors and maps are in ``dtype`` (``None``: the SVD's)."""
    if u.shape[-2] > vh.shape[-1]:  # tall: the wide blocks Wᵀ = V Σ Uᵀ, with left and right swapped back
        inner = _svt_tangent_from(vh.mT, s, u.mT, t, dtype)
        if inner is None:
            return None
        apply, factors = inner.apply, inner.apply_factors
        assert factors is not None
        return TangentJacobian(
            inner.index,
            inner.right,
            inner.left,
            inner.columns,
            lambda h: apply(h.mT).mT,
            lambda c, d: factors(d, c)[::-1],  # J Hᵀ = L' C'ᵀ + D' R'ᵀ with L' = R, R' = L
        )
    if not bool(torch.isfinite(s).all()):
        return None
    act = s > t
    index = act.any(dim=-1).nonzero().squeeze(-1)
    rank = int(act.sum(dim=-1).max()) if s.numel() else 0
    u, s, vh, act = u[index], s[index], vh[index], act[index]
    columns = act[:, :rank]  # σ is sorted: the active columns come first
    keep = columns[:, None, :].to(u.dtype)
    left, right = _cast(dtype, u[..., :rank] * keep, vh[..., :rank, :].mT * keep)
    weights = _svt_weights(s, t)  # one computation for both maps
    return TangentJacobian(
        index=index,
        left=left,
        right=right,
        columns=columns,
        apply=_svt_jacobian_map(u, vh, weights, dtype),
        apply_factors=_svt_factor_map(u, vh, weights, act, rank, dtype),
    )


class _SVTPoint(ProxPoint):
    """:class:`ProxPoint` of the nuclear norms on matrix blocks: prox and Jacobian from one SVD of ``W``."""

    def __init__(self, penalty: Penalty, w: torch.Tensor, t: float) -> None:
        self.penalty, self.w, self.t = penalty, w, t
        self.svd = _svd(w)
        self.prox = _svt_from(*self.svd, t, w)

    def jacobian(self, index: torch.Tensor | None = None) -> Callable[[torch.Tensor], torch.Tensor]:
        u, s, vh = self.svd if index is None else (f[index] for f in self.svd)
        return _svt_jacobian_from(u, s, vh, self.t)

    def active_blocks(self) -> torch.Tensor | None:
        s = self.svd[1]
        return _above(s[:, 0], self.t) if s.ndim == 2 and s.shape[-1] else None

    def tangent(self, dtype: torch.dtype | None = None) -> TangentJacobian | None:
        return _svt_tangent_from(*self.svd, self.t, dtype) if self.w.ndim == 3 else None


def _nuclear(z: torch.Tensor) -> torch.Tensor:
    if _is_vector_block(z):
        return torch.linalg.vector_norm(z, dim=(-2, -1)).sum()
    return _svdvals(z).sum()


def _spectral(w: torch.Tensor) -> torch.Tensor:
    if _is_vector_block(w):
        return torch.linalg.vector_norm(w, dim=(-2, -1)).max()
    return _svdvals(w)[..., 0].max()


class NuclearNorm(Penalty):
    """``‖Z‖_*`` of a matrix, exact prox by SVD soft-thresholding; dual norm = spectral norm."""

    name = "nuclear"

    def value(self, z: torch.Tensor) -> torch.Tensor:
        return _nuclear(z)

    def prox(self, z: torch.Tensor, t: float) -> torch.Tensor:
        return _svt(z, t)

    def dual_norm(self, w: torch.Tensor) -> torch.Tensor:
        return _spectral(w)

    def prox_jacobian(self, w: torch.Tensor, t: float) -> Callable[[torch.Tensor], torch.Tensor]:
        return _svt_jacobian(w, t)

    def tangent_jacobian(self, w: torch.Tensor, t: float) -> TangentJacobian | None:
        """On a (P, m, n) batch of matrix blocks (:func:`_svt_tangent_jacobian`)."""
        return _svt_tangent_jacobian(w, t)

    def active_blocks(self, w: torch.Tensor, t: float) -> torch.Tensor | None:
        """The blocks of a (P, m, n) batch whose largest singular value exceeds ``t``."""
        if w.ndim != 3:
            return None
        if _is_vector_block(w):  # the nuclear norm of a vector is its ℓ2 norm
            return GroupL2(axes=(1, 2)).active_blocks(w, t)
        return _above(_svdvals(w)[:, 0], t)

    def prox_point(self, w: torch.Tensor, t: float) -> ProxPoint:
        """Prox and Jacobian from one SVD of ``W`` (vector blocks: the group-ℓ2 forms, no SVD)."""
        return ProxPoint(self, w, t) if _is_vector_block(w) else _SVTPoint(self, w, t)

    def block_jacobian(self, w: torch.Tensor, t: float) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Blocks of one column (a (P, d, 1) batch) are vectors: block soft-thresholding's ``(a, u)``."""
        if w.ndim != 3 or w.shape[-1] != 1:
            return None
        return _vector_block_jacobian(w, t)


class BlockNuclearNorm(NuclearNorm):
    """``Σ_j ‖Z_j‖_*`` over a batch of blocks (…, m, n): batched SVD prox; dual norm = max_j ‖W_j‖_2.

    With blocks of one column (c = 1) it is the group ℓ2 penalty over blocks, computed without an SVD.
    The implementation is the batched path of :class:`NuclearNorm`; the class exists to name the penalty.
    """

    name = "block_nuclear"


class L1Norm(Penalty):
    """``Σ |Z|``: soft-thresholding prox; dual norm = ℓ∞."""

    name = "l1"

    def value(self, z: torch.Tensor) -> torch.Tensor:
        return z.abs().sum()

    def prox(self, z: torch.Tensor, t: float) -> torch.Tensor:
        return torch.sign(z) * torch.clamp(z.abs() - t, min=0.0)

    def dual_norm(self, w: torch.Tensor) -> torch.Tensor:
        return w.abs().max()

    def prox_jacobian(self, w: torch.Tensor, t: float) -> Callable[[torch.Tensor], torch.Tensor]:
        keep = (w.abs() > t).to(w.dtype)
        return lambda h: keep * h


class ConeGroupL2(Penalty):
    """``Σ_{s,j,k} ‖Z[s, j, :, k]‖_2 + ι{(2D_j − I) X Z[s, j, :, k] ≥ 0}`` on tensors (2, P, d, c).

    The cone-constrained group norm of the convex ReLU network (Sahiner et al. eq. (5), one group per neuron and
    output column). For a closed convex cone ``C``, ``prox_{t‖·‖+ι_C}(z) = shrink_t(P_C(z))`` and the support
    function of ``{‖z‖ ≤ 1, z ∈ C}`` is ``‖P_C(w)‖``; ``P_C(z) = z + Bᵀλ*`` with ``λ* = argmin_{λ≥0} ‖z + Bᵀλ‖``
    (Moreau), one non-negative least-squares problem per group (SciPy, on the CPU).
    """

    name = "cone_group_l2"

    def __init__(self, x: torch.Tensor, masks: torch.Tensor) -> None:
        self.x = x
        self.signs = 2.0 * masks.to(x.dtype) - 1.0  # (N, P)
        self._x_np = x.detach().cpu().double().numpy()
        self._signs_np = self.signs.detach().cpu().double().numpy()

    def slack(self, z: torch.Tensor) -> torch.Tensor:
        """``(2D_j − I) X Z[s, j]`` for every group, shape (2, N, P, c)."""
        xz = torch.einsum("nd,spdc->snpc", self.x, z)
        return self.signs[None, :, :, None] * xz

    def violation(self, z: torch.Tensor) -> float:
        """``max (−slack)_+ / max |slack|``: 0 when every group is in its cone."""
        sl = self.slack(z)
        scale = float(sl.abs().max()) if sl.numel() else 0.0
        return float((-sl).clamp_min(0).max()) / scale if scale > 0 else 0.0

    def project(self, z: torch.Tensor) -> torch.Tensor:
        """``P_C(Z)`` group by group; groups already in their cone are left as they are."""
        out = z.detach().clone()
        bad = (self.slack(z) < 0).any(dim=1)  # (2, P, c)
        if not bool(bad.any()):
            return out
        z_np = z.detach().cpu().double().numpy()
        for s, j, k in bad.nonzero().tolist():
            bt = (self._x_np * self._signs_np[:, j : j + 1]).T  # (d, N): columns are the cone's normals
            lam, _ = nnls(bt, -z_np[s, j, :, k])
            out[s, j, :, k] = torch.as_tensor(z_np[s, j, :, k] + bt @ lam, dtype=z.dtype)
        return out

    def value(self, z: torch.Tensor) -> torch.Tensor:
        """The group norm sum, or ``+inf`` outside the cones (relative violation above ``1e3·eps``)."""
        if self.violation(z) > 1e3 * torch.finfo(z.dtype).eps:
            return torch.tensor(float("inf"), dtype=z.dtype, device=z.device)
        return torch.linalg.vector_norm(z, dim=2).sum()

    def prox(self, z: torch.Tensor, t: float) -> torch.Tensor:
        return GroupL2(axes=(2,)).prox(self.project(z), t)

    def dual_norm(self, w: torch.Tensor) -> torch.Tensor:
        return torch.linalg.vector_norm(self.project(w), dim=2).max()


def get_penalty(name: str) -> Penalty:
    """A penalty by name: ``nuclear``, ``block_nuclear``, ``l1`` (``group_l2`` needs axes: build it directly)."""
    table: dict[str, type[Penalty]] = {"nuclear": NuclearNorm, "block_nuclear": BlockNuclearNorm, "l1": L1Norm}
    try:
        return table[name]()
    except KeyError:
        raise ValueError(f"unknown penalty {name!r}; choose one of {sorted(table)} or GroupL2(axes)") from None
