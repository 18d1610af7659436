"""L-BFGS pieces for a variable that is a pair of tensors (the factors ``(U, V)`` of the Burer–Monteiro solver).

* :func:`two_loop`: the L-BFGS two-loop recursion (Nocedal 1980; Liu & Nocedal 1989; Nocedal & Wright, *Numerical
  Optimization*, 2nd ed., Alg. 7.4) with an optional diagonal initial metric scaled by the usual
  ``sᵀy / yᵀH₀y`` factor of the newest pair; :func:`update_memory` keeps the newest pairs with ``sᵀy > 0``.
* :func:`strong_wolfe_search`: a bracketing line search for the strong Wolfe conditions (Nocedal & Wright,
  Alg. 3.5–3.6): the step grows by 4 until a bracket is found, then a zoom by secant interpolation of the slope,
  safeguarded by bisection.
* :func:`convex_line_search`: the exact minimiser over ``t ≥ 0`` of a convex function of one variable from its slope
  (bracketing, then safeguarded secant on the slope).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TypeVar

import torch

__all__ = ["MemoryPair", "Pair", "convex_line_search", "pair_dot", "strong_wolfe_search", "two_loop", "update_memory"]

Pair = tuple[torch.Tensor, torch.Tensor]
"""A point, gradient or direction of the pair variable ``(U, V)``."""
MemoryPair = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, float]
"""An L-BFGS memory entry ``(s_U, s_V, y_U, y_V, 1/sᵀy)``."""

T = TypeVar("T")


def pair_dot(a: Pair, b: Pair) -> float:
    """The inner product ``⟨a_U, b_U⟩ + ⟨a_V, b_V⟩`` of two pairs."""
    return float((a[0] * b[0]).sum() + (a[1] * b[1]).sum())


def two_loop(grad: Pair, memory: Sequence[MemoryPair], precond: torch.Tensor | None) -> Pair:
    """The L-BFGS direction ``−H g`` for the gradient ``grad`` and the pairs ``memory`` (oldest first).

    The initial inverse Hessian is ``γ·diag(precond)`` (``precond`` broadcast against both tensors; None: the identity)
    with ``γ = sᵀy / yᵀ diag(precond) y`` of the newest pair (``γ = 1`` with an empty memory)."""
    ql, qr = grad[0].clone(), grad[1].clone()
    alphas = []
    for sl, sr, yl, yr, rho in reversed(memory):
        a = rho * pair_dot((sl, sr), (ql, qr))
        alphas.append(a)
        ql -= a * yl
        qr -= a * yr
    if precond is not None:
        ql, qr = ql * precond, qr * precond
    if memory:
        sl, sr, yl, yr, rho = memory[-1]
        dy = (yl * precond, yr * precond) if precond is not None else (yl, yr)
        gamma = 1.0 / (rho * pair_dot((yl, yr), dy))
        ql *= gamma
        qr *= gamma
    for (sl, sr, yl, yr, rho), a in zip(memory, reversed(alphas), strict=True):
        b = rho * pair_dot((yl, yr), (ql, qr))
        ql += (a - b) * sl
        qr += (a - b) * sr
    return -ql, -qr


def update_memory(memory: Sequence[MemoryPair], step: Pair, change: Pair, size: int) -> list[MemoryPair]:
    """``memory`` with the pair ``(s, y) = (step, change of the gradient)`` appended, keeping the newest ``size``
    pairs; the pair is skipped (the memory returned as a list) unless ``sᵀy > 1e-12·‖s‖‖y‖``."""
    sy = pair_dot(step, change)
    if sy > 1e-12 * math.sqrt(pair_dot(step, step) * pair_dot(change, change)):
        return [*memory, (*step, *change, 1.0 / sy)][-size:]
    return list(memory)


def strong_wolfe_search(
    line: Callable[[float], tuple[float, float, T]],
    phi0: float,
    dphi0: float,
    step: float,
    slack: float = 0.0,
    c1: float = 1e-4,
    c2: float = 0.1,
    max_evals: int = 60,
) -> tuple[float, float, T] | None:
    """A step ``a > 0`` along a descent direction with ``φ(a) ≤ φ(0) + c1·a·φ'(0) + slack`` and
    ``|φ'(a)| ≤ −c2·φ'(0)`` (strong Wolfe).

    ``line(a)`` returns ``(φ(a), φ'(a), payload)`` (the payload, e.g. the predictions at ``a``, is handed back with the
    accepted step); ``phi0 = φ(0)``, ``dphi0 = φ'(0) < 0``; ``step`` is the first trial; ``slack`` absorbs rounding in
    ``φ``. At most ``max_evals`` evaluations. Returns ``(a, φ(a), payload)``; if the conditions are not met (at the
    rounding level of ``φ``, or when the bracket collapses), the last step with sufficient decrease, or None if
    there is none."""
    lo, phi_lo, der_lo = 0.0, phi0, dphi0
    pay_lo: T | None = None
    hi: float | None = None
    der_hi = math.nan
    a = step
    for _ in range(max_evals):
        val, der, pa = line(a)
        if not math.isfinite(val) or val > phi0 + c1 * a * dphi0 + slack or (val >= phi_lo and lo > 0):
            hi, der_hi = a, der
        elif abs(der) <= -c2 * dphi0:
            return a, val, pa
        elif der > 0:
            hi, der_hi = a, der
        else:
            lo, phi_lo, der_lo, pay_lo = a, val, der, pa
        if hi is None:
            a *= 4.0
        else:
            width = hi - lo
            if width <= 1e-14 * max(hi, 1e-300):
                break
            cand = lo - der_lo * width / (der_hi - der_lo) if math.isfinite(der_hi) and der_hi > der_lo else math.nan
            if not math.isfinite(cand) or not (lo + 0.1 * width <= cand <= hi - 0.1 * width):
                cand = lo + 0.5 * width
            a = cand
    if lo > 0:
        assert pay_lo is not None
        return lo, phi_lo, pay_lo
    return None


def convex_line_search(slope: Callable[[float], float], curvature: float) -> float:
    """``argmin_{t ≥ 0} h(t)`` for a convex ``h`` given its derivative ``slope`` and an upper bound ``curvature`` on
    ``h''`` (so that ``−h'(0)/curvature ≤ t*``, the first trial).

    Returns 0 unless ``h'(0) < 0``. The step is doubled until the slope is ``≥ 0`` or not finite (at most 60 times;
    then the last step with negative slope is returned), then the bracket is shrunk by secant steps on the slope,
    kept at least 5% of the width inside it (bisection where the slope is not finite), until ``|h'(t)| ≤ 1e-10·|h'(0)|``
    or the bracket is narrower than ``1e-12`` relative."""
    d0 = slope(0.0)
    if not (d0 < 0):
        return 0.0
    lo, hi, dlo = 0.0, -d0 / curvature if curvature > 0 else 1.0, d0  # curvature bounds h'' above: t* ≥ this first hi
    dhi = slope(hi)
    for _ in range(60):  # expand until the slope is ≥ 0 (or not finite)
        if not (math.isfinite(dhi) and dhi < 0):
            break
        lo, dlo, hi = hi, dhi, 2.0 * hi
        dhi = slope(hi)
    else:
        return lo
    for _ in range(100):  # safeguarded secant (bisection when the slope at hi is not finite)
        width = hi - lo
        if width <= 1e-12 * hi:
            break
        t = lo - dlo * width / (dhi - dlo) if math.isfinite(dhi) and dhi > dlo else lo + 0.5 * width
        t = min(max(t, lo + 0.05 * width), hi - 0.05 * width)
        dt = slope(t)
        if math.isfinite(dt) and dt <= 0:
            lo, dlo = t, dt
        else:
            hi, dhi = t, dt
        if math.isfinite(dt) and abs(dt) <= 1e-10 * abs(d0):
            return t
    return lo if lo > 0 else (0.5 * hi if math.isfinite(dhi) else 0.0)
