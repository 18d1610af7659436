"""Augmented-Lagrangian method for the cone-constrained convex ReLU network (Sahiner et al. eq. (5);
Mishkin, Sahiner & Pilanci 2022, "Fast convex optimization for two-layer ReLU networks").

    min_{V, W}  f(Σ_j D_j X (V_j − W_j)) + β Σ_{j,k} (‖V_j[:, k]‖ + ‖W_j[:, k]‖)
    s.t.        (2D_j − I) X V_j ≥ 0,   (2D_j − I) X W_j ≥ 0.

Each subproblem is again ``f̃(Ã Z) + β R(Z)`` (a :class:`CompositeProblem`) and is solved by :class:`FISTA`: the
stacked operator ``Ã`` returns the predictions and the constraint values, and the augmented-Lagrangian loss
``f̃`` adds ``(1/2δN) Σ ((λ − δ K Z)_+² − λ²)`` to ``f``. Multipliers are updated as ``λ ← (λ − δ K Z)_+``.

The certificate is Lagrangian: for any ``λ ≥ 0`` and ``s = min(1, β / R°(A*∇f − K*λ))``,
``−f*(s ∇f)`` is a lower bound on the optimum; it is reported with the relative constraint violation.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch

from ..certificates import Certificate
from ..losses import Loss
from ..operators.base import LinearOperator
from ..penalties import GroupL2
from ..problem import CompositeProblem
from .fista import FISTA, History, SolveResult

__all__ = ["ReLUConeOperator", "AugmentedLagrangianLoss", "AugmentedLagrangian", "ConstrainedSolveResult"]


class ReLUConeOperator(LinearOperator):
    """``Z = (V, W)`` of shape (2, P, d, c) ↦ rows ``[Σ_j D_j X (V_j − W_j); S ⊙ X V; S ⊙ X W]`` with ``S = 2D − 1``.

    The output has ``N + 2 N P`` rows of width ``c``: the predictions, then the constraint values.
    """

    def __init__(self, x: torch.Tensor, masks: torch.Tensor, n_outputs: int) -> None:
        self.x = x
        self.masks = masks.to(x.dtype)
        self.signs = 2.0 * self.masks - 1.0
        self.n_samples, self.n_features = x.shape
        self.n_patterns = int(masks.shape[1])
        self.n_outputs = int(n_outputs)
        self.z_shape = (2, self.n_patterns, self.n_features, self.n_outputs)
        self.dtype, self.device = x.dtype, x.device

    def _xz(self, z: torch.Tensor) -> torch.Tensor:
        p, d, c = self.z_shape[1:]
        return (self.x @ z.permute(1, 0, 2).reshape(d, p * c)).view(-1, p, c)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        xv, xw = self._xz(z[0]), self._xz(z[1])
        pred = torch.einsum("npc,np->nc", xv - xw, self.masks)
        s = self.signs.unsqueeze(-1)
        return torch.cat([pred, (s * xv).reshape(-1, self.n_outputs), (s * xw).reshape(-1, self.n_outputs)])

    def _xt(self, g: torch.Tensor) -> torch.Tensor:
        p, d, c = self.z_shape[1:]
        return (self.x.T @ g.reshape(-1, p * c)).view(d, p, c).permute(1, 0, 2)

    def adjoint(self, g: torch.Tensor) -> torch.Tensor:
        n, (p, c) = self.n_samples, (self.n_patterns, self.n_outputs)
        gp = g[:n]
        gv = g[n : n + n * p].view(n, p, c)
        gw = g[n + n * p :].view(n, p, c)
        dg = self.masks.unsqueeze(-1) * gp.unsqueeze(1)
        s = self.signs.unsqueeze(-1)
        return torch.stack([self._xt(dg + s * gv), self._xt(-dg + s * gw)])

    def predictions(self, u: torch.Tensor) -> torch.Tensor:
        return u[: self.n_samples]

    def constraints(self, u: torch.Tensor) -> torch.Tensor:
        return u[self.n_samples :]


class AugmentedLagrangianLoss(Loss):
    """``f(u_pred) + (1/2δN) Σ ((λ − δ u_cons)_+² − λ²)`` on the stacked rows of :class:`ReLUConeOperator`."""

    name = "augmented_lagrangian"

    def __init__(self, base: Loss, lam: torch.Tensor, delta: float) -> None:
        self.base = base
        self.lam = lam
        self.delta = float(delta)
        self.n_samples = base.n_samples
        self.y = base.y

    def _split(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return u[: self.n_samples], u[self.n_samples :]

    def value(self, u: torch.Tensor) -> torch.Tensor:
        up, uc = self._split(u)
        lam = self.lam.to(u.dtype)
        aug = ((lam - self.delta * uc).clamp_min(0).square() - lam.square()).sum()
        return self.base.value(up) + aug / (2 * self.delta * self.n_samples)

    def grad(self, u: torch.Tensor) -> torch.Tensor:
        up, uc = self._split(u)
        gc = -(self.lam.to(u.dtype) - self.delta * uc).clamp_min(0) / self.n_samples
        return torch.cat([self.base.grad(up), gc])

    def value_grad(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        up, uc = self._split(u)
        lam = self.lam.to(u.dtype)
        pos = (lam - self.delta * uc).clamp_min(0)
        fv, fg = self.base.value_grad(up)
        aug = (pos.square() - lam.square()).sum() / (2 * self.delta * self.n_samples)
        return fv + aug, torch.cat([fg, -pos / self.n_samples])

    def lipschitz(self) -> float:
        return max(self.base.lipschitz(), self.delta / self.n_samples)

    def conjugate(self, theta: torch.Tensor) -> torch.Tensor:
        tp, tc = self._split(theta)
        if bool((tc > 0).any()):
            return torch.tensor(math.inf, dtype=theta.dtype, device=theta.device)
        lam = self.lam.to(theta.dtype)
        return self.base.conjugate(tp) + (lam + self.n_samples * tc).square().sum() / (
            2 * self.delta * self.n_samples
        )


@dataclass
class ConstrainedSolveResult(SolveResult):
    """A :class:`SolveResult` with the relative violation ``max (−K Z)_+ / max |K Z|`` of the cone constraints."""

    violation: float = 0.0
    n_outer: int = 0


class AugmentedLagrangian:
    """The augmented-Lagrangian method for :class:`ReLUConeOperator` problems.

    ``tol`` bounds the Lagrangian relative gap, ``constraint_tol`` the relative constraint violation; ``delta``
    is the penalty parameter (grown ×``delta_growth`` when the violation stalls); inner solves use FISTA.
    """

    def __init__(
        self,
        tol: float = 1e-6,
        constraint_tol: float = 1e-8,
        delta: float = 100.0,
        delta_growth: float = 10.0,
        max_outer: int = 100,
        max_iter: int = 10_000,
        max_time: float | None = None,
    ) -> None:
        self.tol = tol
        self.constraint_tol = constraint_tol
        self.delta = delta
        self.delta_growth = delta_growth
        self.max_outer = max_outer
        self.max_iter = max_iter
        self.max_time = max_time

    @staticmethod
    def lagrangian_certificate(
        base: Loss, op: ReLUConeOperator, penalty: GroupL2, beta: float, z: torch.Tensor, u: torch.Tensor,
        lam: torch.Tensor,
    ) -> tuple[Certificate, float]:
        up, uc = op.predictions(u), op.constraints(u)
        g = base.grad(up)
        r = float(penalty.dual_norm(op.adjoint(torch.cat([g, -lam / base.n_samples]))))
        scale = 1.0 if r <= beta else (beta / r if beta > 0 else 0.0)
        u64 = up.double()
        primal = float(base.value(u64)) + beta * float(penalty.value(z))
        dual = -float(base.conjugate(base.grad(u64) * scale))
        gap = max(primal - dual, 0.0)
        cert = Certificate(primal, dual, gap, gap / max(abs(primal), 1e-300), r)
        violation = float((-uc).clamp_min(0).max()) / max(float(uc.abs().max()), 1e-300) if uc.numel() else 0.0
        return cert, violation

    def run(
        self, base: Loss, op: ReLUConeOperator, penalty: GroupL2, beta: float, z0: torch.Tensor | None = None
    ) -> ConstrainedSolveResult:
        """Solve ``min f(A(V − W)) + β R(V, W)`` under the cone constraints of ``op``; ``penalty`` groups the
        columns of (2, P, d, c), i.e. ``GroupL2(axes=(2,))``."""
        start = time.perf_counter()
        lam = torch.zeros(op.n_samples * op.n_patterns * 2, op.n_outputs, dtype=op.dtype, device=op.device)
        delta = self.delta
        z = op.zeros() if z0 is None else z0
        history = History()
        n_iter, status, violation_prev = 0, "max_iter", math.inf
        cert: Certificate | None = None
        violation = math.inf
        outer = 0
        for outer in range(1, self.max_outer + 1):
            inner = FISTA(tol=self.tol / 10, max_iter=max(self.max_iter - n_iter, 1))
            problem = CompositeProblem(AugmentedLagrangianLoss(base, lam, delta), op, penalty, beta)
            res = inner.run(problem, z0=z)
            n_iter += res.n_iter
            if res.status == "diverged":
                status = "diverged"
                break
            z = res.z
            u = op.forward(z)
            lam = (lam - delta * op.constraints(u)).clamp_min(0)
            cert, violation = self.lagrangian_certificate(base, op, penalty, beta, z, u, lam)
            history.append(n_iter, time.perf_counter() - start, cert.primal, cert.rel_gap)
            if cert.rel_gap <= self.tol and violation <= self.constraint_tol:
                status = "converged"
                break
            if n_iter >= self.max_iter:
                break
            if self.max_time is not None and time.perf_counter() - start >= self.max_time:
                status = "max_time"
                break
            if violation > 0.25 * violation_prev:
                delta *= self.delta_growth
            violation_prev = violation
        if cert is None:
            u = op.forward(z)
            cert, violation = self.lagrangian_certificate(base, op, penalty, beta, z, u, lam)
        return ConstrainedSolveResult(
            z=z, objective=cert.primal, certificate=cert, status=status, n_iter=n_iter,
            time=time.perf_counter() - start, history=history, violation=violation, n_outer=outer,
        )
