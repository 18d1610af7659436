"""Row-stochastic matrices for the convexified attention of Ergen, Neyshabur & Mehta (2022, §3.1, eq. (4)) and its
token-lasso twins: the Euclidean projection onto the simplex (Duchi et al. 2008), simplex rows as softmax logits or
as the weights themselves, and the output-weight decay of eq. (11)."""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = [
    "OUTPUT_NORMS",
    "PARAMETRIZATIONS",
    "SimplexRows",
    "check_output_norm",
    "output_decay",
    "project_rows_to_simplex",
    "uniform_rows",
]

PARAMETRIZATIONS = ("softmax", "simplex")
OUTPUT_NORMS = ("l1", "l2")


def project_rows_to_simplex(w: torch.Tensor, allowed: torch.Tensor | None = None) -> torch.Tensor:
    """Euclidean projection of every row (last axis) onto the probability simplex (Duchi et al. 2008).

    With a boolean ``allowed`` (broadcastable to ``w``), each row is projected onto the face of the simplex
    supported on its allowed entries (the others are set to 0); a row with no allowed entry becomes 0.
    """
    if allowed is not None:
        allowed = allowed.expand_as(w)
        w = torch.where(allowed, w, torch.full_like(w, -math.inf))
    u, _ = torch.sort(w, dim=-1, descending=True)
    finite = torch.isfinite(u)
    css = torch.where(finite, u, torch.zeros_like(u)).cumsum(-1) - 1.0
    k = torch.arange(1, w.shape[-1] + 1, device=w.device, dtype=w.dtype)
    cond = finite & (u - css / k > 0)
    rho = cond.to(w.dtype).cumsum(-1).argmax(-1, keepdim=True)  # the last index where cond holds
    theta = css.gather(-1, rho) / (rho + 1).to(w.dtype)
    out = torch.clamp(w - theta, min=0.0)
    out = torch.where(torch.isfinite(out), out, torch.zeros_like(out))
    if allowed is not None:
        out = out * cond.any(-1, keepdim=True).to(w.dtype)
    return out


class SimplexRows(nn.Module):
    """Rows ``(…, n)`` on the probability simplex, as softmax logits or as the weights themselves."""

    def __init__(self, weights: torch.Tensor, parametrization: str, allowed: torch.Tensor | None = None) -> None:
        super().__init__()
        if parametrization not in PARAMETRIZATIONS:
            raise ValueError(f"parametrization must be one of {PARAMETRIZATIONS}, got {parametrization!r}")
        self.parametrization = parametrization
        if allowed is None:
            self.allowed = None
        else:
            self.register_buffer("allowed", allowed.clone())
        w = project_rows_to_simplex(weights.detach(), self.allowed)
        if parametrization == "softmax":  # logits log(w): zero weights become (finite) logits of weight ~1e-308
            self.param = nn.Parameter(torch.log(w.clamp_min(torch.finfo(w.dtype).tiny)))
        else:
            self.param = nn.Parameter(w)

    def logits(self) -> torch.Tensor:
        if self.allowed is None:
            return self.param
        return self.param.masked_fill(~self.allowed, -math.inf)

    def weights(self) -> torch.Tensor:
        """The rows, each on the simplex (for ``"simplex"`` after :meth:`project_`)."""
        if self.parametrization == "softmax":
            return torch.softmax(self.logits(), dim=-1)
        return self.param if self.allowed is None else self.param * self.allowed

    @torch.no_grad()
    def project_(self) -> None:
        """Put ``"simplex"`` weights back on the simplex (no-op for ``"softmax"``)."""
        if self.parametrization == "simplex":
            self.param.copy_(project_rows_to_simplex(self.param, self.allowed))


def uniform_rows(shape: tuple[int, ...], dtype: torch.dtype | None = None) -> torch.Tensor:
    """Rows of equal weights ``1/n``."""
    return torch.full(shape, 1.0 / shape[-1], dtype=dtype)


def check_output_norm(output_norm: str) -> str:
    """``output_norm`` if it is one of :data:`OUTPUT_NORMS`, else ``ValueError``."""
    if output_norm not in OUTPUT_NORMS:
        raise ValueError(f"output_norm must be one of {OUTPUT_NORMS}, got {output_norm!r}")
    return output_norm


def output_decay(b: torch.Tensor, output_norm: str) -> torch.Tensor:
    """``Σ_j ‖b_j‖²`` (``"l2"``) or ``Σ_j ‖b_j‖_1²`` (``"l1"``, eq. (11)) over the rows ``b_j`` of ``b``."""
    if output_norm == "l1":
        return b.abs().sum(-1).square().sum()
    return b.square().sum()
