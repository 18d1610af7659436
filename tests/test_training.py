"""The training loop itself: resume after an interruption is bit-identical, the KSVD term is the layer's own
``ksvd_loss``, gradient clipping, the order of the hooks, and data parallel on 2 processes (gloo, float64)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from attnduality.distributed import GlobalBatchLoader, barrier, launch, world
from attnduality.experiments import TrainingCheckpoint
from attnduality.experiments.distributed_demo import PrimalFormerDemo, build_primalformer, primalformer_data
from attnduality.nn import ksvd_loss
from attnduality.training import KSVD, Step, TrainResult, ksvd_data_parallel, resume, train

TINY = PrimalFormerDemo(n_train=48, n_test=16, embed_dim=8, rank=2, rank_multi=2, epochs=2, batch_size=16)


class Interrupted(RuntimeError):
    pass


def _mlp_run(ck: TrainingCheckpoint, rounds: int = 4, stop_at: tuple[int, int] | None = None) -> dict[str, Any]:
    """An MLP with dropout (global RNG), AdamW + a step-wise schedule, shuffled by a generator: every piece of state
    that resuming must restore. ``stop_at=(round, update)`` raises there, as a killed process would stop."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 3)).double()
    x = torch.randn(40, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    y = torch.randint(0, 3, (40,), generator=torch.Generator().manual_seed(2))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.5)
    gen = torch.Generator().manual_seed(3)
    torch.manual_seed(123)  # the run's global RNG (dropout masks)
    start = resume(ck, model=model, optimizer=opt, scheduler=sched, generators=[gen])
    losses: list[float] = list(ck.extra.get("losses", []))

    def epoch(_: int) -> Any:
        perm = torch.randperm(40, generator=gen)
        return (perm[i : i + 8] for i in range(0, 40, 8))

    def record(step: Step) -> None:
        if stop_at == (step.round, step.index):
            raise Interrupted
        losses.append(float(step.loss))

    model.train()
    train(
        model,
        lambda net, idx: F.cross_entropy(net(x[idx]), y[idx]),
        opt,
        rounds,
        epoch,
        start=start,
        scheduler=sched,
        checkpoint=ck,
        generators=[gen],
        extra=lambda: {"losses": losses},
        on_step=record,
    )
    return {"start": start, "losses": losses, "state": model.state_dict(), "opt": opt.state_dict()}


def test_resume_after_an_interruption_is_bit_identical(tmp_path: Path) -> None:
    full = _mlp_run(TrainingCheckpoint(tmp_path / "full.pt", every=1))
    ck = TrainingCheckpoint(tmp_path / "run.pt", every=1)
    with pytest.raises(Interrupted):
        _mlp_run(ck, stop_at=(2, 3))  # in the middle of round 2: rounds 0 and 1 are in the file
    torch.manual_seed(999)  # a fresh process: another global RNG state
    resumed = _mlp_run(ck)
    assert resumed["start"] == 2 and len(resumed["losses"]) == len(full["losses"]) == 20
    assert resumed["losses"] == full["losses"]
    assert all(torch.equal(resumed["state"][k], v) for k, v in full["state"].items())
    assert torch.equal(resumed["opt"]["state"][0]["exp_avg"], full["opt"]["state"][0]["exp_avg"])
    # the check has teeth: a resume that leaves the global RNG (the dropout masks) as it is does not reproduce the run
    forgets = ForgetsRng(tmp_path / "forgets.pt", every=1)
    assert _mlp_run(forgets, rounds=2)["losses"] == full["losses"][:10]  # the round count does not change round 0, 1
    torch.manual_seed(999)
    assert _mlp_run(forgets)["losses"] != full["losses"]


class ForgetsRng(TrainingCheckpoint):
    def resume(self, **kwargs: Any) -> int:
        state = torch.get_rng_state()
        start = super().resume(**kwargs)
        torch.set_rng_state(state)
        return start


def test_order_of_operations_and_result(tmp_path: Path) -> None:
    """One round per step, objective → zero_grad → backward → step → scheduler → after_step → on_step → on_round →
    checkpoint; the result lists every update's loss."""
    model = nn.Linear(2, 1).double()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 1.0 / (t + 1))
    ck = TrainingCheckpoint(tmp_path / "ck.pt", every=2)
    events: list[Any] = []

    def objective(net: nn.Module, batch: int) -> tuple[torch.Tensor, int]:
        events.append(("objective", batch, net.weight.grad is None))
        return (net(torch.ones(1, 2, dtype=torch.float64)) - batch).square().sum(), batch * 10

    res = train(
        model,
        objective,
        opt,
        3,
        lambda t: (t, t + 1),
        scheduler=sched,
        checkpoint=ck,
        extra=lambda: {"saved_after": len(events)},
        after_step=lambda: events.append(("after_step", float(opt.param_groups[0]["lr"]))),
        on_step=lambda s: events.append(("step", s.round, s.index, s.aux, s.lr, s.ksvd)),
        on_round=lambda t, bar: events.append(("round", t, type(bar).__name__)),
    )
    assert isinstance(res, TrainResult) and (res.start, res.rounds, res.updates) == (0, 3, 6)
    assert events[:4] == [
        ("objective", 0, True),
        ("after_step", 0.05),
        ("step", 0, 0, 0, 0.1, None),
        ("objective", 1, False),
    ]
    assert [e for e in events if e[0] == "round"] == [("round", t, "range") for t in range(3)]
    assert [e[4] for e in events if e[0] == "step"] == pytest.approx([0.1, 0.05, 0.1 / 3, 0.025, 0.02, 0.1 / 6])
    assert ck.load()["next"] == 2 and ck.extra == {"saved_after": 14}  # after round 1 only (every=2, 3 rounds)
    assert len(res.losses) == 6 and all(isinstance(v, float) for v in res.losses)
    again = train(model, objective, opt, 3, lambda t: (t,), checkpoint=ck)  # resumes at round 2 by itself
    assert (again.start, again.updates) == (2, 1)


def _primal_model_and_batch(padding: bool) -> tuple[nn.Module, torch.Tensor, torch.Tensor | None, torch.Tensor]:
    cfg = replace(TINY, padding=padding)
    data, _ = primalformer_data(cfg)
    batch = data[:16]
    x, mask, y = batch if padding else (batch[0], None, batch[1])
    return build_primalformer(cfg), x, mask, y


def _grads(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: torch.zeros_like(p) if p.grad is None else p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize(
    ("per_sample", "trace", "padding"), [(False, "params", False), (False, "data", True), (True, "params", True)]
)
def test_ksvd_term_is_the_layers_own_ksvd_loss(per_sample: bool, trace: str, padding: bool) -> None:
    """With η the gradient changes by exactly η ∇ksvd_loss(model): train()'s update equals the hand-written one."""
    eta = 0.3
    model, x, mask, y = _primal_model_and_batch(padding)
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    seen: dict[str, Any] = {}

    def run(ksvd: KSVD | None) -> dict[str, torch.Tensor]:
        model.load_state_dict(fresh)
        opt = torch.optim.SGD(model.parameters(), lr=0.0)
        train(
            model,
            lambda net, _: F.cross_entropy(net(x, mask), y),
            opt,
            1,
            ksvd=ksvd,
            on_step=lambda s: seen.update(ksvd=s.ksvd, loss=s.loss, task=s.task),
        )
        return _grads(model)

    with_term = run(KSVD(eta, per_sample=per_sample, trace=trace))
    term_value, loss_value = seen["ksvd"], seen["loss"]
    without = run(None)
    assert seen["ksvd"] is None and torch.equal(seen["loss"], seen["task"])
    # by hand, the same operations
    model.load_state_dict(fresh)
    model.zero_grad(set_to_none=True)
    task = F.cross_entropy(model(x, mask), y)
    reg = ksvd_loss(model, per_sample=per_sample, trace=trace)
    (task + eta * reg).backward()
    by_hand = _grads(model)
    assert torch.equal(term_value, reg.detach()) and torch.equal(loss_value, (task + eta * reg).detach())
    assert all(torch.equal(with_term[k], by_hand[k]) for k in by_hand)
    # the difference is η ∇ ksvd_loss: it moves Λ (no gradient from the task) and the projections
    model.zero_grad(set_to_none=True)
    model(x, mask)
    (eta * ksvd_loss(model, per_sample=per_sample, trace=trace)).backward()
    only = _grads(model)
    lam = [k for k in only if k.endswith("lambdas")]
    assert lam and all(
        float(only[k].abs().max()) > 0 and torch.equal(without[k], torch.zeros_like(only[k])) for k in lam
    )
    for k in by_hand:
        torch.testing.assert_close(with_term[k] - without[k], only[k], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("trace", ["params", "data"])
def test_ksvd_data_parallel_in_one_process_is_ksvd_loss(trace: str) -> None:
    model, x, mask, _ = _primal_model_and_batch(padding=True)
    model(x, mask)
    loss, value = ksvd_data_parallel(model, trace=trace)
    ref = ksvd_loss(model, trace=trace)
    torch.testing.assert_close(value, ref.detach(), rtol=1e-12, atol=0)
    g = torch.autograd.grad(loss, list(model.parameters()), allow_unused=True, retain_graph=True)
    g_ref = torch.autograd.grad(ref, list(model.parameters()), allow_unused=True)
    assert sum(a is not None for a in g_ref) > 3
    for a, b, w in zip(g, g_ref, model.parameters(), strict=True):
        zero = torch.zeros_like(w)
        torch.testing.assert_close(zero if a is None else a, zero if b is None else b, rtol=1e-10, atol=1e-14)


def test_grad_clip_bounds_the_gradient_norm_before_the_step() -> None:
    torch.manual_seed(0)
    x, y = torch.randn(32, 4, dtype=torch.float64), torch.randn(32, 1, dtype=torch.float64)
    norms: list[float] = []

    def run(clip: float | None) -> nn.Module:
        torch.manual_seed(1)
        model = nn.Linear(4, 1).double()
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        train(
            model,
            lambda net, _: 100 * F.mse_loss(net(x), y),
            opt,
            3,
            grad_clip=clip,
            on_step=lambda s: norms.append(float(torch.cat([p.grad.ravel() for p in model.parameters()]).norm())),
        )
        return model

    clipped = run(0.5)
    assert norms == pytest.approx([0.5] * 3, rel=1e-6)  # clip_grad_norm_ divides by the norm + 1e-6
    norms.clear()
    plain = run(None)
    assert min(norms) > 0.5
    # the same update by hand
    torch.manual_seed(1)
    ref = nn.Linear(4, 1).double()
    opt = torch.optim.SGD(ref.parameters(), lr=0.1)
    for _ in range(3):
        loss = 100 * F.mse_loss(ref(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(ref.parameters(), 0.5)
        opt.step()
    assert all(torch.equal(a, b) for a, b in zip(clipped.parameters(), ref.parameters(), strict=True))
    assert not torch.equal(clipped.weight, plain.weight)


def test_bad_input_raises() -> None:
    model = nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="PrimalAttention"):
        train(model, lambda net, _: net.weight.sum(), opt, 1, ksvd=KSVD(0.1))
    train(model, lambda net, _: net.weight.sum(), opt, 1, ksvd=KSVD(0.0))  # weight 0: no term, no layer needed
    with pytest.raises(ValueError, match="grad_clip"):
        train(model, lambda net, _: net.weight.sum(), opt, 1, grad_clip=0.0)
    with pytest.raises(ValueError, match="rounds"):
        train(model, lambda net, _: net.weight.sum(), opt, -1)
    with pytest.raises(ValueError, match="no parameters"):
        train(nn.ReLU(), lambda net, _: torch.zeros(()), opt, 1)
    for bad in ({"weight": -1.0}, {"weight": float("nan")}, {"weight": 1.0, "trace": "x"}):
        with pytest.raises(ValueError):
            KSVD(**bad)


# ----------------------------------------------------------------------------------------------------------------
# data parallel: 2 processes
# ----------------------------------------------------------------------------------------------------------------
DDP_CFG = replace(TINY, padding=True)  # unequal token counts per rank
DDP_KSVD = KSVD(0.1, trace="data")  # the batch form: J assembled from the ranks' parts


def ddp_case(out: str, stop: int | None = None) -> dict[str, Any]:
    """RAdam on the global batches of :class:`GlobalBatchLoader` (6 steps); ``stop``: train that many steps, then
    resume from the checkpoint into a fresh model (both in this process group)."""
    dataset, _ = primalformer_data(DDP_CFG)
    p, b = world(), DDP_CFG.batch_size
    total = 2 * len(GlobalBatchLoader(dataset, b, seed=0))

    def objective(net: nn.Module, batch: Any) -> torch.Tensor:
        x, mask, y = batch
        return F.cross_entropy(net(x, mask), y, reduction="sum") * (p / b)

    def run(rounds: int, ck: TrainingCheckpoint | None) -> tuple[nn.Module, list[float]]:
        loader = GlobalBatchLoader(dataset, b, seed=0)  # a fresh one, as in a new process
        model = build_primalformer(DDP_CFG)
        opt = torch.optim.RAdam(model.parameters(), lr=1e-2)
        start = 0 if ck is None else resume(ck, model=model, optimizer=opt)
        losses: list[float] = [] if ck is None else list(ck.extra.get("ksvd", []))
        train(
            model,
            objective,
            opt,
            rounds,
            lambda t: (loader.batch(t),),
            start=start,
            checkpoint=ck,
            ksvd=DDP_KSVD,
            extra=lambda: {"ksvd": losses},
            on_step=lambda s: losses.append(float(s.ksvd)),
        )
        return model, losses

    if stop is None:
        model, ksvd = run(total, None)
    else:
        ck = TrainingCheckpoint(Path(out) / "ck.pt", every=stop)
        run(stop, ck)
        barrier()  # rank 0 has written the checkpoint
        model, ksvd = run(total, ck)
    return {"params": {k: v.detach().clone() for k, v in model.state_dict().items()}, "ksvd": ksvd, "world": p}


def ddp_cases(out: str) -> list[dict[str, Any]]:
    return [ddp_case(out), ddp_case(out, stop=2)]


def test_two_processes_equal_one_and_resume_bit_identically(tmp_path: Path) -> None:
    (full0, resumed0), (full1, resumed1) = launch(ddp_cases, 2, str(tmp_path))
    single = ddp_case(str(tmp_path))
    assert full0["world"] == 2 and single["world"] == 1 and len(full0["ksvd"]) == 6
    for k, ref in single["params"].items():
        assert torch.equal(full0["params"][k], full1["params"][k]), k  # the replicas stay identical
        assert torch.equal(resumed0["params"][k], full0["params"][k]), k  # resumed on 2 processes: bit for bit
        assert torch.allclose(full0["params"][k], ref, rtol=0, atol=1e-10), k
    assert resumed0["ksvd"] == full0["ksvd"] == full1["ksvd"]
    assert full0["ksvd"] == pytest.approx(single["ksvd"], rel=1e-10)
