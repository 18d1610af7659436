"""The solver-core behaviour before commit a9289ec, restorable inside a benchmark process (nothing in src/ is
touched), so that ``exp_fista_fixes.py`` can measure what that commit changed:

1. ``GatedMLPOperator.forward`` / ``.adjoint`` (src/attnduality/convex/operators/mlp.py) allocated two fresh N×P
   temporaries per call; large temporaries are served by mmap in glibc (above its dynamic threshold, and again
   after heap trimming), so every call page-faulted its output in (~5000 minor faults per iteration at N=2000,
   P=500, float64; an elementwise product cost ~25 ms instead of ~3 ms at N=10000). a9289ec reuses one (N, P·c)
   workspace.
2. ``CompositeProblem.lipschitz`` (src/attnduality/convex/problem.py) ran 30 power iterations; a9289ec runs 10 (the
   estimate only seeds the step; backtracking corrects an underestimate).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from attnduality.convex.operators.mlp import GatedMLPOperator
from attnduality.convex.problem import CompositeProblem

_SHIPPED = {
    "forward": GatedMLPOperator.forward,
    "adjoint": GatedMLPOperator.adjoint,
    "lipschitz": CompositeProblem.lipschitz,
}


def fresh_forward(self: GatedMLPOperator, z: torch.Tensor) -> torch.Tensor:
    """The forward of 49f08db: a new N×P product and a new N×P masked copy per call."""
    p, d, c = self.z_shape
    if c == 1:
        return ((self.x @ z[:, :, 0].T) * self.masks).sum(1, keepdim=True)
    xz = (self.x @ z.permute(1, 0, 2).reshape(d, p * c)).view(-1, p, c)
    return torch.einsum("npc,np->nc", xz, self.masks)


def fresh_adjoint(self: GatedMLPOperator, g: torch.Tensor) -> torch.Tensor:
    """The adjoint of 49f08db: a new N×P masked residual per call."""
    p, d, c = self.z_shape
    if c == 1:
        return (self.x.T @ (self.masks * g)).T.unsqueeze(-1)
    dg = (self.masks.unsqueeze(-1) * g.unsqueeze(1)).reshape(-1, p * c)
    return (self.x.T @ dg).view(d, p, c).permute(1, 0, 2)


def lipschitz_30(self: CompositeProblem) -> float:
    """``CompositeProblem.lipschitz`` of 49f08db: 30 power iterations."""
    return self.loss.lipschitz() * self.operator.norm_sq(n_iter=30)


@contextmanager
def previous_behaviour(operator: bool = True, lipschitz: bool = True) -> Iterator[None]:
    """Restore the chosen pre-a9289ec methods for the duration of the ``with`` block."""
    if operator:
        GatedMLPOperator.forward, GatedMLPOperator.adjoint = fresh_forward, fresh_adjoint
    if lipschitz:
        CompositeProblem.lipschitz = lipschitz_30
    try:
        yield
    finally:
        GatedMLPOperator.forward, GatedMLPOperator.adjoint = _SHIPPED["forward"], _SHIPPED["adjoint"]
        CompositeProblem.lipschitz = _SHIPPED["lipschitz"]
