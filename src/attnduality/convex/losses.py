"""Smooth data-fit terms ``f(U) = (1/N) Σ_i φ(U_i, y_i)`` on predictions ``U`` of shape (N, c).

Every loss supplies its value, gradient with respect to the predictions, a Lipschitz bound of that gradient and
the convex conjugate ``f*(Θ)`` used by the duality-gap certificate (see :mod:`attnduality.convex.certificates`).
The objective convention of the whole library is ``(1/N) Σ_i L(f(x_i), y_i) + β · penalty``.
"""

from __future__ import annotations

import copy
import math
from abc import ABC, abstractmethod

import torch

__all__ = ["Loss", "SquaredLoss", "CrossEntropyLoss", "LogisticLoss", "HessianFactor", "get_loss"]


def _xlogx(p: torch.Tensor) -> torch.Tensor:
    """``p log p`` with the convention ``0 log 0 = 0``."""
    return torch.where(p > 0, p * torch.log(p.clamp_min(torch.finfo(p.dtype).tiny)), torch.zeros_like(p))


class HessianFactor(ABC):
    """A per-sample factor ``S`` of the damped Hessian, ``SᵀS = ∇²f(U) + μI`` (one (c, c) block per sample), applied
    to (N, c) arrays. The semismooth Newton solver writes its quadratic model as the least squares ``½‖S A Δ + S⁻ᵀ
    ∇f‖²``; any such ``S`` gives the same model, so each loss picks the one cheapest to apply
    (:meth:`Loss.hessian_factor`)."""

    @property
    def scalar(self) -> torch.Tensor | None:
        """``S`` as an (N,) vector where ``c = 1`` (else ``None``)."""
        return None

    @abstractmethod
    def apply(self, v: torch.Tensor) -> torch.Tensor:
        """``S v`` per sample."""

    @abstractmethod
    def apply_t(self, v: torch.Tensor) -> torch.Tensor:
        """``Sᵀ v`` per sample."""

    @abstractmethod
    def solve_t(self, g: torch.Tensor) -> torch.Tensor:
        """``S⁻ᵀ g`` per sample."""

    def astype(self, dtype: torch.dtype) -> HessianFactor:
        """The same ``S`` with its arrays in ``dtype`` (the Newton solver's products at lower precision)."""
        out = copy.copy(self)
        vars(out).update({k: v.to(dtype) for k, v in vars(self).items() if isinstance(v, torch.Tensor)})
        return out


class _SymmetricRoot(HessianFactor):
    """The symmetric square root of ``h + μI`` for (N, c, c) blocks ``h``, from an eigendecomposition (eigenvalues
    floored at ``μ`` against rounding): a (c, c) product per sample and application."""

    def __init__(self, h: torch.Tensor, mu: float) -> None:
        lam, vec = torch.linalg.eigh(h + mu * torch.eye(h.shape[-1], dtype=h.dtype, device=h.device))
        lam = lam.clamp_min(mu)
        self.root = (vec * lam.sqrt().unsqueeze(-2)) @ vec.mT
        self.inverse_root = (vec * lam.rsqrt().unsqueeze(-2)) @ vec.mT

    def apply(self, v: torch.Tensor) -> torch.Tensor:
        return (self.root @ v.unsqueeze(-1)).squeeze(-1)

    apply_t = apply  # the root is symmetric

    def solve_t(self, g: torch.Tensor) -> torch.Tensor:
        return (self.inverse_root @ g.unsqueeze(-1)).squeeze(-1)


class _DiagonalFactor(HessianFactor):
    """``S = diag(s)`` per sample, ``s`` of shape (N, c): separable outputs."""

    def __init__(self, s: torch.Tensor) -> None:
        self.s = s

    @property
    def scalar(self) -> torch.Tensor | None:
        return self.s[:, 0] if self.s.shape[-1] == 1 else None

    def apply(self, v: torch.Tensor) -> torch.Tensor:
        return self.s * v

    apply_t = apply

    def solve_t(self, g: torch.Tensor) -> torch.Tensor:
        return g / self.s


class _SoftmaxFactor(HessianFactor):
    """``S = (I − γ q qᵀ) D^{1/2}`` for the softmax Hessian ``(diag(p) − p pᵀ)/N + μI = D^{1/2} (I − q qᵀ) D^{1/2}``
    with ``D = diag(p/N + μ)``, ``q = D^{-1/2} p/√N``: ``(I − γ q qᵀ)² = I − q qᵀ`` for ``γ = 1/(1 + √(1 − ‖q‖²))``,
    and ``(I − γ q qᵀ)⁻¹ = I + (γ/√(1 − ‖q‖²)) q qᵀ``. Each application is a few elementwise passes over (N, c),
    against a batched (c, c) product for the dense root (a quarter of its time at N = 1347, c = 10)."""

    def __init__(self, p: torch.Tensor, mu: float) -> None:
        n = p.shape[0]
        d = p / n + mu
        self.root_d = d.sqrt()
        self.q = p / (math.sqrt(n) * self.root_d)
        # 1 − ‖q‖² = Σ_k p_k (1 − (p_k/N)/d_k) = Σ_k p_k μ/d_k: positive, and without cancellation where μ ≪ p/N
        rest = (p * (mu / d)).sum(-1, keepdim=True).sqrt()
        self.gamma = 1.0 / (1.0 + rest)
        self.delta = self.gamma / rest

    def apply(self, v: torch.Tensor) -> torch.Tensor:
        w = self.root_d * v
        return w - (self.gamma * (self.q * w).sum(-1, keepdim=True)) * self.q

    def apply_t(self, v: torch.Tensor) -> torch.Tensor:
        return self.root_d * (v - (self.gamma * (self.q * v).sum(-1, keepdim=True)) * self.q)

    def solve_t(self, g: torch.Tensor) -> torch.Tensor:
        w = g / self.root_d
        return w + (self.delta * (self.q * w).sum(-1, keepdim=True)) * self.q


class Loss(ABC):
    """A smooth convex loss averaged over samples, bound to its targets ``y``."""

    name: str = ""

    def __init__(self, y: torch.Tensor) -> None:
        self.y = y
        self.n_samples = int(y.shape[0])

    @abstractmethod
    def value(self, u: torch.Tensor) -> torch.Tensor:
        """``f(U)``, a 0-d tensor."""

    @abstractmethod
    def grad(self, u: torch.Tensor) -> torch.Tensor:
        """``∇f(U)``, same shape as ``U``."""

    def value_grad(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.value(u), self.grad(u)

    @abstractmethod
    def hessian(self, u: torch.Tensor) -> torch.Tensor:
        """``∇²f(U)``: the loss is separable over samples, so its Hessian is one (c, c) block per sample, (N, c, c)."""

    def hessian_factor(self, u: torch.Tensor, mu: float) -> HessianFactor:
        """A per-sample factor ``S`` with ``SᵀS = ∇²f(U) + μI``, ``μ > 0`` (:class:`HessianFactor`)."""
        if not mu > 0:
            raise ValueError(f"the damping mu must be > 0, got {mu}")
        return self._hessian_factor(u, mu)

    def _hessian_factor(self, u: torch.Tensor, mu: float) -> HessianFactor:
        """:meth:`hessian_factor` for a valid ``μ``: diagonal for one output, else the symmetric square root."""
        h = self.hessian(u)
        if h.shape[-1] == 1:
            return _DiagonalFactor((h[:, :, 0] + mu).clamp_min(mu).sqrt())
        return _SymmetricRoot(h, mu)

    @abstractmethod
    def lipschitz(self) -> float:
        """An upper bound on the Lipschitz constant of ``∇f`` (w.r.t. the Frobenius norm of ``U``)."""

    @abstractmethod
    def conjugate(self, theta: torch.Tensor) -> torch.Tensor:
        """``f*(Θ) = sup_U ⟨Θ, U⟩ − f(U)``; ``+inf`` outside the domain."""

    def subset(self, stop: int) -> Loss:
        """The same loss on the first ``stop`` samples (a sample-average, so comparable at the same ``β``)."""
        if not 1 <= int(stop) <= self.n_samples:
            raise ValueError(f"stop must be in 1..{self.n_samples}, got {stop}")
        return type(self)(self.y[: int(stop)])

    def astype(self, dtype: torch.dtype) -> Loss:
        """The same loss with floating targets in ``dtype`` (class indices stay integers)."""
        if not dtype.is_floating_point:
            raise ValueError(f"astype needs a floating-point dtype, got {dtype}")
        return type(self)(self.y.to(dtype) if self.y.is_floating_point() else self.y)

    def project_dual(self, theta: torch.Tensor) -> torch.Tensor:
        """The Euclidean projection of ``Θ`` onto ``dom f*`` (the identity where ``f*`` is finite everywhere)."""
        return theta

    def dual_feasible(self, grad: torch.Tensor, scale: float) -> torch.Tensor:
        """A dual point ``Θ = scale·∇f(U)``; every loss here keeps it inside dom f* for ``scale ∈ [0, 1]``."""
        return grad * scale


class SquaredLoss(Loss):
    """``f(U) = (1/2N) ‖U − Y‖_F²``; targets (N, c) floats."""

    name = "squared"

    def value(self, u: torch.Tensor) -> torch.Tensor:
        return 0.5 * (u - self.y).square().sum() / self.n_samples

    def grad(self, u: torch.Tensor) -> torch.Tensor:
        return (u - self.y) / self.n_samples

    def hessian(self, u: torch.Tensor) -> torch.Tensor:
        eye = torch.eye(u.shape[1], dtype=u.dtype, device=u.device)
        return (eye / self.n_samples).expand(u.shape[0], -1, -1)

    def lipschitz(self) -> float:
        return 1.0 / self.n_samples

    def conjugate(self, theta: torch.Tensor) -> torch.Tensor:
        # f*(Θ) = (N/2)‖Θ‖² + ⟨Θ, Y⟩
        return 0.5 * self.n_samples * theta.square().sum() + (theta * self.y).sum()


class CrossEntropyLoss(Loss):
    """Softmax cross-entropy ``f(U) = (1/N) Σ_i [logsumexp(U_i) − U_i[y_i]]``; targets (N,) class indices."""

    name = "cross_entropy"

    def __init__(self, y: torch.Tensor) -> None:
        super().__init__(y.long())

    def value(self, u: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.cross_entropy(u, self.y, reduction="mean")

    def grad(self, u: torch.Tensor) -> torch.Tensor:
        g = torch.softmax(u, dim=1)
        g[torch.arange(self.n_samples, device=u.device), self.y] -= 1.0
        return g / self.n_samples

    def value_grad(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logp = torch.log_softmax(u, dim=1)
        idx = torch.arange(self.n_samples, device=u.device)
        value = -logp[idx, self.y].mean()
        g = torch.exp(logp)
        g[idx, self.y] -= 1.0
        return value, g / self.n_samples

    def hessian(self, u: torch.Tensor) -> torch.Tensor:
        p = torch.softmax(u, dim=1)
        return (torch.diag_embed(p) - p.unsqueeze(2) * p.unsqueeze(1)) / self.n_samples

    def _hessian_factor(self, u: torch.Tensor, mu: float) -> HessianFactor:
        return _SoftmaxFactor(torch.softmax(u, dim=1), mu)

    def project_dual(self, theta: torch.Tensor) -> torch.Tensor:
        """Rows ``NΘ_i + e_{y_i}`` projected onto the probability simplex (sort-based, Held et al. 1974)."""
        idx = torch.arange(self.n_samples, device=theta.device)
        p = self.n_samples * theta
        p[idx, self.y] += 1.0
        srt = torch.sort(p, dim=1, descending=True).values
        css = srt.cumsum(1) - 1.0
        k = torch.arange(1, p.shape[1] + 1, dtype=p.dtype, device=p.device)
        rho = ((srt - css / k) > 0).sum(1, keepdim=True).clamp_min(1)
        tau = css.gather(1, rho - 1) / rho.to(p.dtype)
        p = (p - tau).clamp_min(0.0)
        p[idx, self.y] -= 1.0
        return p / self.n_samples

    def lipschitz(self) -> float:
        # The Hessian of logsumexp is diag(p) − p pᵀ ⪯ ½ I.
        return 0.5 / self.n_samples

    def conjugate(self, theta: torch.Tensor) -> torch.Tensor:
        # φ*(v) = Σ_k p_k log p_k with p = v + e_y in the simplex; f*(Θ) = (1/N) Σ_i φ*(N Θ_i).
        p = self.n_samples * theta
        p[torch.arange(self.n_samples, device=theta.device), self.y] += 1.0
        tol = 1e3 * torch.finfo(theta.dtype).eps
        if bool((p < -tol).any()) or bool(((p.sum(1) - 1).abs() > tol * p.shape[1]).any()):
            return torch.tensor(math.inf, dtype=theta.dtype, device=theta.device)
        return _xlogx(p.clamp_min(0)).sum() / self.n_samples


class LogisticLoss(Loss):
    """Binary logistic ``f(u) = (1/N) Σ_i log(1 + exp(−y_i u_i))``; targets (N, 1) in {−1, +1}."""

    name = "logistic"

    def value(self, u: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.softplus(-self.y * u).mean()

    def grad(self, u: torch.Tensor) -> torch.Tensor:
        return -self.y * torch.sigmoid(-self.y * u) / self.n_samples

    def hessian(self, u: torch.Tensor) -> torch.Tensor:
        s = torch.sigmoid(self.y * u)
        return (s * (1.0 - s) / self.n_samples).unsqueeze(-1)

    def project_dual(self, theta: torch.Tensor) -> torch.Tensor:
        a = (-self.y * theta * self.n_samples).clamp(0.0, 1.0)
        return -self.y * a / self.n_samples

    def lipschitz(self) -> float:
        return 0.25 / self.n_samples

    def conjugate(self, theta: torch.Tensor) -> torch.Tensor:
        # φ*(v) = a log a + (1−a) log(1−a) with a = −y v ∈ [0, 1].
        a = -self.y * theta * self.n_samples
        tol = 1e3 * torch.finfo(theta.dtype).eps
        if bool((a < -tol).any()) or bool((a > 1 + tol).any()):
            return torch.tensor(math.inf, dtype=theta.dtype, device=theta.device)
        a = a.clamp(0, 1)
        return (_xlogx(a) + _xlogx(1 - a)).sum() / self.n_samples


_LOSSES: dict[str, type[Loss]] = {
    "squared": SquaredLoss,
    "cross_entropy": CrossEntropyLoss,
    "logistic": LogisticLoss,
}


def get_loss(name: str) -> type[Loss]:
    """The loss class registered under ``name`` (``squared``, ``cross_entropy``, ``logistic``)."""
    try:
        return _LOSSES[name]
    except KeyError:
        raise ValueError(f"unknown loss {name!r}; choose one of {sorted(_LOSSES)}") from None
