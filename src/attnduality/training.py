"""One training loop for every gradient-trained model of the project.

:func:`train` runs rounds ``start, ..., rounds - 1``. A round is whatever the caller counts in (an epoch, or one
step): round ``t`` takes one optimiser update per batch of ``batches(t)`` (one update on ``batch=None`` without
``batches``). Each update, in this order:

1. ``out = objective(model, batch)``: the loss, or ``(loss, aux)``; ``+ ksvd.weight · ksvd_loss(model)`` with a
   :class:`KSVD` term (Chen et al. 2023; :func:`attnduality.nn.ksvd_loss`, on the layers' last forward pass);
2. ``optimizer.zero_grad(set_to_none=True)``, ``backward()``, ``clip_grad_norm_(model.parameters(), grad_clip)``;
3. ``optimizer.step()``, ``scheduler.step()``, ``after_step()`` (e.g. a projection), ``on_step(Step)``.

After the round: ``on_round(t, bar)`` (evaluation, logging; ``bar`` is what ``progress`` returned), then the
checkpoint (``checkpoint.maybe_save(t, ...)`` with ``extra()``). The data order, evaluation and history stay with
the caller, so a loop moves onto this one without changing an operation or a random draw.

Resuming: :func:`resume` restores a checkpoint (model, optimiser, scheduler, generators, RNGs) and returns the round
to start from; call it first when the history lives in ``checkpoint.extra``, and pass ``start``. A resumed run
continues bit for bit when ``batches(t)`` depends only on ``t`` and state the checkpoint holds (seeded per-epoch
permutations, or a ``generator`` passed in ``generators`` with checkpoints at round ends).

Data parallel (a process group with ``world > 1``, e.g. under ``torchrun``): the model is wrapped in
``DistributedDataParallel`` (``static_graph``: Λ is used only by the KSVD term, outside ``forward``) and the
objective gets the wrapper; each rank's ``batches(t)`` is its equal share of the global batch
(:class:`attnduality.distributed.GlobalBatchLoader`) and its loss must be scaled so that the DDP gradient average
is the global batch's gradient. The KSVD term is then that of the *global* batch (per-sample form: the mean over
all ranks' sequences; batch form: each layer's ``J`` assembled from the ranks' parts, see
:func:`ksvd_data_parallel`). Rank 0 writes the checkpoints, with every rank's torch RNG state in
``extra["rank_rng"]``, which :func:`resume` gives back to each rank.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.distributed as dist
from torch import Tensor, nn

from .nn.primal import ksvd_loss, primal_layers

__all__ = ["KSVD", "Checkpoint", "Step", "TrainResult", "ksvd_data_parallel", "resume", "train"]

RANK_RNG = "rank_rng"
"""Key of the per-rank torch RNG states in a data-parallel checkpoint's ``extra``."""


class Checkpoint(Protocol):
    """What the loop needs of a checkpoint (:class:`attnduality.experiments.runner.TrainingCheckpoint`)."""

    every: int
    extra: dict[str, Any]

    def resume(
        self, *, model: Any = None, optimizer: Any = None, scheduler: Any = None, generators: Sequence[Any] = ()
    ) -> int: ...

    def maybe_save(
        self,
        t: int,
        *,
        model: Any = None,
        optimizer: Any = None,
        scheduler: Any = None,
        generators: Sequence[Any] = (),
        extra: Mapping[str, Any] | None = None,
        force: bool = False,
    ) -> bool: ...


@dataclass(frozen=True)
class KSVD:
    """The KSVD regulariser ``weight · ksvd_loss(model, per_sample=per_sample, trace=trace)`` added to the loss.

    ``per_sample=True`` squares ``J`` per sequence (official TS/RL/NLP), ``False`` one ``J`` per batch (LRA/CV);
    ``trace`` as in :meth:`attnduality.nn.PrimalAttention.ksvd_objective`. ``weight = 0`` adds nothing.
    """

    weight: float
    per_sample: bool = False
    trace: str = "params"

    def __post_init__(self) -> None:
        if not (isinstance(self.weight, int | float) and 0 <= self.weight < float("inf")):
            raise ValueError(f"the KSVD weight must be a finite number >= 0, got {self.weight!r}")
        if self.trace not in ("params", "data"):
            raise ValueError(f"ksvd trace must be 'params' or 'data', got {self.trace!r}")


@dataclass(frozen=True)
class Step:
    """One update, as ``on_step`` sees it (tensors detached; in data-parallel runs ``loss``/``task`` are this rank's,
    ``ksvd`` the global batch's)."""

    round: int
    index: int
    """position of the batch in its round"""
    batch: Any
    loss: Tensor
    """the loss back-propagated: ``task + weight · ksvd``"""
    task: Tensor
    """the objective's loss"""
    ksvd: Tensor | None
    """the KSVD regulariser (before its weight); ``None`` without a KSVD term"""
    aux: Any
    """the objective's second output (``None`` if it returned a tensor)"""
    lr: float
    """the learning rate of the optimiser's first parameter group for this update"""


@dataclass(frozen=True)
class TrainResult:
    """What :func:`train` did in this call (a resumed run covers rounds ``start`` to ``rounds - 1`` only)."""

    start: int
    rounds: int
    updates: int
    losses: list[float]
    """``Step.loss`` of every update of this call"""
    seconds: float


def _world_rank() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


def _sum_over_ranks(t: Tensor) -> Tensor:
    out = t.detach().clone().contiguous()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


def resume(
    checkpoint: Checkpoint,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any = None,
    generators: Sequence[Any] = (),
) -> int:
    """Restore ``checkpoint`` into the objects and the RNGs (each rank its own torch RNG in a data-parallel run);
    the round to start from (0 if nothing was saved). ``checkpoint.extra`` then holds the saved ``extra``."""
    start = checkpoint.resume(model=model, optimizer=optimizer, scheduler=scheduler, generators=generators)
    p, r = _world_rank()
    states = checkpoint.extra.get(RANK_RNG)
    if p > 1 and states is not None and len(states) == p:
        torch.set_rng_state(states[r])
    return start


def ksvd_data_parallel(model: nn.Module, *, trace: str = "params") -> tuple[Tensor, Tensor]:
    """Batch-form KSVD regulariser of the *global* batch on this rank: (loss to back-propagate, its value).

    ``(1/L) Σ_l J_l²`` needs each layer's ``J`` of the global batch, which is not a mean of the ranks' ``J²``. From
    the layer's own :meth:`~attnduality.nn.PrimalAttention.ksvd_objective`: ``J = proj − tr``, with ``proj`` a mean
    over the batch's counted tokens and heads (:class:`~attnduality.nn.primal.PrimalScores` ``valid``) and ``tr``
    the trace term, a parameter term (``trace="params"``) or a mean over the sequences (``"data"``). So the global
    ``J = Σ_r (c_r/C)·J_r`` for ``trace="params"`` (``c`` token counts) and, since
    ``J_params − J_data = tr_data − tr_params``, ``J = Σ_r [(c_r/C)·J_params,r − (b_r/B)·(J_params,r − J_data,r)]``
    for ``"data"`` (``b`` sequence counts). One all-reduce for the counts, one for the ``J``; each rank
    back-propagates ``2·P·J·(its share of J)``, so the DDP gradient average is exactly ``∇ J²``.
    """
    p, _ = _world_rank()
    layers = list(primal_layers(model))
    if not layers:
        raise ValueError(f"{type(model).__name__} contains no PrimalAttention layer")
    parts = [layer.ksvd_objective(per_sample=False, trace=trace) for layer in layers]
    counts = []
    for layer in layers:
        sc = layer.scores
        assert sc is not None  # ksvd_objective has checked
        counts.append(float(sc.e.shape[0] * sc.e.shape[1]) if sc.valid is None else float(sc.valid.sum()))
    b_local = float(layers[0].scores.e.shape[0])  # type: ignore[union-attr]
    dtype, device = layers[0].lambdas.dtype, layers[0].lambdas.device
    totals = torch.tensor([*counts, b_local], dtype=torch.float64, device=device)
    if p > 1:
        totals = _sum_over_ranks(totals)
    shares = []
    for layer, j, c, total in zip(layers, parts, counts, totals[:-1].tolist(), strict=True):
        if trace == "params":
            shares.append(j * (c / total))
        else:
            jp = layer.ksvd_objective(per_sample=False, trace="params")
            shares.append(jp * (c / total) - (jp - j) * (b_local / float(totals[-1])))
    share_t = torch.stack(shares).to(dtype)
    j_global = _sum_over_ranks(share_t) if p > 1 else share_t.detach()
    value = j_global.square().mean()
    surrogate = (2.0 * p * j_global * share_t).mean()  # DDP averages over ranks: ∇ = mean_l 2 J_l ∇J_l
    return surrogate + (value - surrogate).detach(), value.detach()


def _ksvd_term(model: nn.Module, ksvd: KSVD, p: int) -> tuple[Tensor, Tensor]:
    """(regulariser to back-propagate, its value on the global batch)."""
    if p == 1:
        reg = ksvd_loss(model, per_sample=ksvd.per_sample, trace=ksvd.trace)
        return reg, reg.detach()
    if ksvd.per_sample:  # a mean over the global batch's sequences; the ranks hold equal shares
        per = ksvd_loss(model, per_sample=True, trace=ksvd.trace, reduction="none")
        n = per.shape[0] * p
        return per.sum() * (p / n), _sum_over_ranks(per.sum()) / n
    return ksvd_data_parallel(model, trace=ksvd.trace)


def _save(
    checkpoint: Checkpoint,
    t: int,
    p: int,
    r: int,
    objects: dict[str, Any],
    extra: Callable[[], Mapping[str, Any]] | None,
) -> None:
    if (t + 1) % checkpoint.every:
        return
    if p == 1:
        checkpoint.maybe_save(t, **objects, extra=dict(extra()) if extra else {})
        return
    states: list[Any] = [None] * p
    dist.all_gather_object(states, torch.get_rng_state())
    if r == 0:
        checkpoint.maybe_save(t, **objects, extra={**(extra() if extra else {}), RANK_RNG: states}, force=True)


def train(
    model: nn.Module,
    objective: Callable[[nn.Module, Any], Tensor | tuple[Tensor, Any]],
    optimizer: torch.optim.Optimizer,
    rounds: int,
    batches: Callable[[int], Iterable[Any]] | None = None,
    *,
    start: int | None = None,
    scheduler: Any = None,
    checkpoint: Checkpoint | None = None,
    generators: Sequence[Any] = (),
    extra: Callable[[], Mapping[str, Any]] | None = None,
    ksvd: KSVD | None = None,
    grad_clip: float | None = None,
    progress: Callable[[range], Iterable[int]] | None = None,
    after_step: Callable[[], None] | None = None,
    on_step: Callable[[Step], None] | None = None,
    on_round: Callable[[int, Any], None] | None = None,
) -> TrainResult:
    """Train ``model`` in place for rounds ``start, ..., rounds - 1`` (module docstring for the order of operations).

    Args:
        model: the module whose parameters ``optimizer`` updates and whose state the checkpoint holds (a
            ``ParameterList``/``ParameterDict`` for bare parameters); ``objective`` receives it (its DDP wrapper
            in a data-parallel run).
        objective: ``(model, batch) -> loss`` or ``(loss, aux)``; ``aux`` travels to ``on_step``.
        batches: round ``t``'s batches, called at the start of the round; ``None``: one update on ``None``.
        start: the round to begin with (the value of :func:`resume`); ``None``: resume ``checkpoint`` here.
        checkpoint: saved after round ``t`` when ``(t + 1) % checkpoint.every == 0``, with ``model``,
            ``optimizer``, ``scheduler``, ``generators`` and ``extra()``.
        ksvd: the KSVD regulariser (the model must contain a PrimalAttention layer when its weight is > 0).
        grad_clip: clip the gradients' global 2-norm to this before each step.
        progress: wraps ``range(start, rounds)``, e.g. ``lambda r: ctx.progress(r, desc, initial=r.start,
            total=r.stop)``; ``on_round`` receives what it returns.
        after_step: called after each ``optimizer.step()`` and ``scheduler.step()``.
    """
    if not isinstance(rounds, int) or rounds < 0:
        raise ValueError(f"rounds must be an int >= 0, got {rounds!r}")
    if grad_clip is not None and not grad_clip > 0:
        raise ValueError(f"grad_clip must be > 0 or None, got {grad_clip!r}")
    params = list(model.parameters())
    if not params:
        raise ValueError(f"{type(model).__name__} has no parameters")
    if ksvd is not None and ksvd.weight == 0:
        ksvd = None
    if ksvd is not None and next(primal_layers(model), None) is None:
        raise ValueError(f"a KSVD term needs a PrimalAttention layer; {type(model).__name__} contains none")
    p, r = _world_rank()
    objects = {"model": model, "optimizer": optimizer, "scheduler": scheduler, "generators": generators}
    if start is None:
        start = 0 if checkpoint is None else resume(checkpoint, **objects)
    net: nn.Module = model
    if p > 1 and not isinstance(model, nn.parallel.DistributedDataParallel):
        device = params[0].device
        ids = [device.index] if device.type == "cuda" else None
        # static_graph: Λ is used only by the KSVD term, outside forward (find_unused_parameters would mark it ready
        # twice), and has no gradient at all without it; the set of used parameters is fixed over the run
        net = nn.parallel.DistributedDataParallel(model, device_ids=ids, static_graph=True)
    span = range(start, rounds)
    bar = span if progress is None else progress(span)
    done: list[Tensor] = []
    chunks: list[Tensor] = []
    t0 = time.perf_counter()
    for t in bar:
        for k, batch in enumerate((None,) if batches is None else batches(t)):
            out = objective(net, batch)
            task, aux = out if isinstance(out, tuple) else (out, None)
            loss, reg = task, None
            if ksvd is not None:
                term, reg = _ksvd_term(net, ksvd, p)
                loss = task + ksvd.weight * term
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(params, grad_clip)
            lr = float(optimizer.param_groups[0]["lr"])
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            if after_step is not None:
                after_step()
            value = loss.detach()
            done.append(value)
            if len(done) == 1024:  # keeps the history on the device without one tensor per update
                chunks.append(torch.stack([v.reshape(()).to(torch.float64) for v in done]))
                done.clear()
            if on_step is not None:
                on_step(Step(t, k, batch, value, task.detach(), reg, aux, lr))
        if on_round is not None:
            on_round(t, bar)
        if checkpoint is not None:
            _save(checkpoint, t, p, r, objects, extra)
    seconds = time.perf_counter() - t0
    if done:
        chunks.append(torch.stack([v.reshape(()).to(torch.float64) for v in done]))
    losses = torch.cat(chunks).tolist() if chunks else []
    return TrainResult(start, rounds, len(losses), losses, seconds)
