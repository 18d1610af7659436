"""What a convex head is: a formulation owns its gates, masks, operator, penalty, β_max, twin and lift.

A :class:`Formulation` is one family of Sahiner et al. (2022) (linear, two-layer MLP, self-attention, MLP-Mixer,
(B-)FNO) or of Ergen et al. (2022) (the token lassos) in one ``kind`` (e.g. ``linear``, ``gated_relu``, ``relu``),
with the family's options (e.g. the attention ``scale``, the FNO ``blocks`` and ``grid``). It answers every
question the rest of the library asks about a head:

* gates: their shape (:meth:`~Formulation.gate_shape`), i.i.d. Gaussian sampler, 0/1 masks on data and the
  distinct gates on a training set (:meth:`~Formulation.distinct_gates`);
* the convex program ``min_Z L(A(Z)) + β R(Z)``: the operator ``A`` (:meth:`~Formulation.operator`), the penalty
  ``R`` (:meth:`~Formulation.penalty`) and ``β_max = R°(A*∇L(0))`` (:meth:`~Formulation.beta_max`);
* the non-convex twin: recovery of a solution (:meth:`~Formulation.to_module`), the lifted variable of twin
  weights ``Z(W1, W2)`` (:meth:`~Formulation.lift`, the inverse of the recovery up to the twin's symmetries) and
  the shapes of the twin's weights with ``h`` heads per block (:meth:`~Formulation.twin_shapes`).

Formulations are immutable. ``bind`` checks them against data shapes and resolves shape-dependent options (the FNO
grid). The registry (:func:`register_formulation`, :func:`get_formulation`, :func:`formulation_names`) is what the
estimators, the CLI, the experiments and the benchmarks read.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from ..arrangements import distinct_gate_indices
from ..losses import Loss
from ..operators import LinearOperator
from ..penalties import Penalty
from ..problem import CompositeProblem

__all__ = [
    "Formulation",
    "formulation_families",
    "formulation_names",
    "get_formulation",
    "register_formulation",
]


@dataclass(frozen=True)
class Formulation:
    """One convex head: a family in one kind, with the family's options (subclasses add them as fields).

    Subclasses set the class attributes and implement the methods that raise :class:`NotImplementedError`; see the
    module docstring for what each answers. ``x`` is always the (already validated) input tensor of the operator:
    (N, s, d) token arrays for token heads (``tokens = True``), (N, d) otherwise.
    """

    kind: str

    family: ClassVar[str] = ""
    kinds: ClassVar[tuple[str, ...]] = ()
    tokens: ClassVar[bool] = True
    """whether the head reads (N, s, d) token arrays (else (N, d) feature rows)"""
    gate_axis: ClassVar[int] = 0
    """the axis of the gate tensor that indexes gates"""
    summary: ClassVar[str] = ""
    """one line naming the head and the paper's equation or theorem"""

    def __post_init__(self) -> None:
        if self.kind not in self.kinds:
            raise ValueError(f"kind must be one of {self.kinds}, got {self.kind!r} (the {self.family} head)")

    # --- identity ---------------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        """``"<family>/<kind>"``, the registry key."""
        return f"{self.family}/{self.kind}"

    @property
    def liftable(self) -> bool:
        """Whether :meth:`lift` exists (it does not for ReLU heads: their twins are not a bilinear image of ``Z``)."""
        return True

    @property
    def gated(self) -> bool:
        """Whether the head has gates (every kind but ``linear``)."""
        return self.kind != "linear"

    def options(self) -> dict[str, Any]:
        """The family's options (every field but ``kind``)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "kind"}

    def bind(self, n_tokens: int, n_features: int, n_outputs: int) -> Formulation:
        """Check the formulation against data shapes (s, d, c) and return it with shape-dependent options resolved
        (``n_tokens`` is 1 for feature rows)."""
        return self

    # --- gates ------------------------------------------------------------------------------------------
    def gate_shape(self, n_tokens: int, n_features: int) -> tuple[int, ...]:
        """The gate tensor's shape with ``-1`` on the gate axis (``()`` for a linear head)."""
        raise NotImplementedError

    def gate_shape_doc(self) -> str:
        """The gate shape in words, for error messages."""
        raise NotImplementedError

    def sample_gates(self, n_tokens: int, n_features: int, n_gates: int, seed: int) -> torch.Tensor:
        """``n_gates`` i.i.d. standard Gaussian gates (float64, so float32 and float64 fits share them)."""
        raise NotImplementedError

    def masks(self, x: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
        """The gates' 0/1 masks on ``x``, gate axis second: (N, m, …)."""
        raise NotImplementedError

    def check_gates(self, gates: Any, n_tokens: int, n_features: int) -> np.ndarray:
        """``gates`` as a float64 array, or ``ValueError`` naming the expected shape or the non-finite values."""
        expected = self.gate_shape(n_tokens, n_features)
        g = np.asarray(gates, dtype=np.float64)
        ok = g.ndim == len(expected) and all(
            (a >= 1) if e == -1 else (a == e) for a, e in zip(g.shape, expected, strict=True)
        )
        if not ok:
            desc = "(" + ", ".join("m" if e == -1 else str(e) for e in expected) + ")"
            raise ValueError(
                f"gates must be an array of shape {desc}, i.e. {self.gate_shape_doc()}, with m >= 1 gates; got "
                f"shape {g.shape}"
            )
        if not np.isfinite(g).all():
            raise ValueError("gates contain NaN or inf")
        return g

    def distinct_gates(self, x: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
        """The gates whose masks on ``x`` are distinct and not all zero (at least the first gate is kept)."""
        m = int(gates.shape[self.gate_axis])
        keep = distinct_gate_indices(lambda xc: self.masks(xc, gates), x, m)
        idx = torch.as_tensor(keep if keep else [0], dtype=torch.long, device=gates.device)
        return gates.index_select(self.gate_axis, idx)

    # --- the convex program -------------------------------------------------------------------------------
    def operator(self, x: torch.Tensor, gates: torch.Tensor | None, n_outputs: int) -> LinearOperator:
        """The head's linear operator ``A`` on inputs ``x`` (``gates`` is None for a linear head)."""
        raise NotImplementedError

    def penalty(self, x: torch.Tensor, gates: torch.Tensor | None) -> Penalty:
        """The regulariser ``R`` (data-dependent only for cone-constrained heads)."""
        raise NotImplementedError

    def problem(
        self, loss: Loss, x: torch.Tensor, gates: torch.Tensor | None, n_outputs: int, beta: float = 1.0
    ) -> CompositeProblem:
        """``min_Z loss(A(Z)) + β R(Z)`` on ``x``."""
        return CompositeProblem(loss, self.operator(x, gates, n_outputs), self.penalty(x, gates), beta)

    def beta_max(self, loss: Loss, x: torch.Tensor, gates: torch.Tensor | None, n_outputs: int) -> float:
        """``R°(A*∇L(0))``: the smallest β at which ``Z = 0`` is optimal."""
        from ..solvers.path import beta_max

        return beta_max(self.problem(loss, x, gates, n_outputs))

    def n_outputs(self, coef_shape: tuple[int, ...], n_features: int) -> int:
        """The number of outputs c of a solution of shape ``coef_shape``."""
        raise NotImplementedError

    # --- the non-convex twin ----------------------------------------------------------------------------
    def to_module(
        self, z: torch.Tensor, gates: torch.Tensor | None, n_tokens: int, n_features: int, x: torch.Tensor | None = None
    ) -> torch.nn.Module:
        """The non-convex twin of a solution ``z`` (one head per nonzero singular value of each block): same outputs,
        and ``loss + β · weight_decay()`` equals the convex objective. ``x``: the training inputs, needed only where
        the recovery depends on them (ReLU attention's cone decomposition)."""
        raise NotImplementedError

    def lift(self, w1: torch.Tensor, w2: torch.Tensor) -> torch.Tensor:
        """``Z(W1, W2)``: the lifted variable of twin weights in the solution's layout (linear in each factor), so
        that ``operator(x, gates, c).forward(lift(w1, w2))`` is the twin's forward pass."""
        raise NotImplementedError

    def twin_shapes(
        self, coef_shape: tuple[int, ...], heads: int, n_tokens: int, n_features: int, n_outputs: int
    ) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Shapes of ``(W1, W2)`` of the twin with ``heads`` heads per block, matching :meth:`lift`."""
        raise NotImplementedError


_REGISTRY: dict[str, type[Formulation]] = {}


def register_formulation(cls: type[Formulation]) -> type[Formulation]:
    """Class decorator: make a formulation family available to :func:`get_formulation` under ``cls.family``."""
    if not cls.family or not cls.kinds:
        raise ValueError(f"{cls.__name__} must set family and kinds")
    if cls.family in _REGISTRY and _REGISTRY[cls.family] is not cls:
        raise ValueError(
            f"a formulation family {cls.family!r} is already registered ({_REGISTRY[cls.family].__name__})"
        )
    _REGISTRY[cls.family] = cls
    return cls


def formulation_families() -> dict[str, type[Formulation]]:
    """The registered families, by name."""
    return dict(_REGISTRY)


def formulation_names() -> list[str]:
    """Every registered ``"<family>/<kind>"``."""
    return [f"{fam}/{kind}" for fam, cls in _REGISTRY.items() for kind in cls.kinds]


def get_formulation(name: str, kind: str | None = None, **options: Any) -> Formulation:
    """The formulation ``name`` (``"attention/gated_relu"``, or a family with ``kind=``) with the family's options,
    e.g. ``get_formulation("fno/gated_relu", blocks=5, grid=(7, 7))``."""
    family, _, k = name.partition("/")
    if k and kind is not None and k != kind:
        raise ValueError(f"conflicting kinds: {name!r} and kind={kind!r}")
    if family not in _REGISTRY:
        raise ValueError(f"unknown formulation family {family!r}; choose from {', '.join(_REGISTRY)}")
    cls = _REGISTRY[family]
    kind = k or kind or cls.kinds[0]
    fields = {f.name for f in dataclasses.fields(cls)} - {"kind"}
    bad = sorted(set(options) - fields)
    if bad:
        raise ValueError(f"unknown options {bad} for the {family} formulation; it takes {sorted(fields) or 'none'}")
    return cls(kind=kind, **options)
