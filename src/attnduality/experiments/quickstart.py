"""Quickstart: a certified convex gated-ReLU network versus Adam on the same non-convex network.

Data: scikit-learn's bundled 8×8 digits (1,797 images, 10 classes), split 75/25 with the run's seed. The
convex program (Sahiner et al. eq. (8), cross-entropy) is solved by FISTA to a relative duality gap ``tol``;
the twin (same gates, weight decay ``β/2 Σ‖θ‖²``) is trained with full-batch Adam from several seeds. The
report shows that no Adam run ends below the certified convex optimum, and compares test accuracies.
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from tqdm import tqdm

from .. import __version__
from ..convex import ConvexMLPClassifier, CrossEntropyLoss, regularized_objective
from ..nn import GatedReLUMLP

__all__ = ["run_quickstart"]


def _adam_twin(
    x: torch.Tensor, y: torch.Tensor, gates: torch.Tensor, n_classes: int, beta: float, seed: int, steps: int
) -> tuple[GatedReLUMLP, list[float], list[float]]:
    gen = torch.Generator().manual_seed(seed)
    d, m = gates.shape
    w1 = torch.randn(d, m, generator=gen, dtype=x.dtype) / d**0.5
    w2 = torch.randn(m, n_classes, generator=gen, dtype=x.dtype) / m**0.5
    module = GatedReLUMLP(gates, w1, w2)
    loss = CrossEntropyLoss(y)
    opt = torch.optim.Adam(module.parameters(), lr=1e-2)
    objs, times, start = [], [], time.perf_counter()
    for _ in tqdm(range(steps), desc=f"Adam seed {seed}", leave=False):
        opt.zero_grad()
        obj = regularized_objective(module, loss, x, beta)
        obj.backward()
        opt.step()
        objs.append(float(obj))
        times.append(time.perf_counter() - start)
    return module, objs, times


def run_quickstart(out: Path, seed: int = 0, quick: bool = False, device: str = "cpu") -> dict[str, Any]:
    """Run the quickstart experiment; writes ``results.json``, ``report.md`` and ``objective.png`` to ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    digits = load_digits()
    x = digits.data / 16.0
    x_tr, x_te, y_tr, y_te = train_test_split(x, digits.target, test_size=0.25, random_state=seed)
    beta = 1e-2
    n_gates = 20 if quick else 50
    steps = 300 if quick else 1500
    n_seeds = 3 if quick else 5

    est = ConvexMLPClassifier(n_gates=n_gates, beta=beta, tol=1e-6, max_iter=20_000, random_state=seed, device=device)
    est.fit(x_tr, y_tr)
    convex = {
        "objective": est.objective_,
        "lower_bound": est.certificate_.dual,
        "relative_gap": est.certificate_.rel_gap,
        "status": est.status_,
        "iterations": est.n_iter_,
        "seconds": est.solve_time_,
        "train_accuracy": float(est.score(x_tr, y_tr)),
        "test_accuracy": float(est.score(x_te, y_te)),
        "neurons": est.to_module().n_neurons,
    }

    xt = torch.as_tensor(x_tr, dtype=torch.float64)
    yt = torch.as_tensor(y_tr)
    gates = torch.as_tensor(est.gates_)
    # The twin needs at least as many neurons per gate as the convex blocks' ranks (≤ min(d, c) = 10).
    wide = gates.repeat_interleave(10, dim=1)
    adam = []
    curves = []
    for s in range(n_seeds):
        module, objs, times = _adam_twin(xt, yt, wide, len(digits.target_names), beta, seed * 100 + s, steps)
        with torch.no_grad():
            pred_te = module(torch.as_tensor(x_te, dtype=torch.float64)).argmax(1).numpy()
        adam.append(
            {
                "seed": seed * 100 + s,
                "final_objective": objs[-1],
                "best_objective": min(objs),
                "seconds": times[-1],
                "test_accuracy": float((pred_te == y_te).mean()),
                "below_convex_optimum": bool(min(objs) < est.certificate_.dual - 1e-12),
            }
        )
        curves.append((times, objs))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    opt = est.certificate_.dual
    for (times, objs), run in zip(curves, adam, strict=True):
        ax.semilogy(times, np.maximum(np.array(objs) - opt, 1e-12), alpha=0.7, label=f"Adam seed {run['seed']}")
    h = est.history_
    ax.semilogy(h.time, np.maximum(np.array(h.objective) - opt, 1e-12), "k-", lw=2, label="convex (FISTA)")
    ax.set_xlabel("seconds")
    ax.set_ylabel("objective − certified lower bound")
    ax.set_title(f"Digits, gated ReLU, β = {beta:g}")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "objective.png", dpi=120)
    plt.close(fig)

    results = {
        "experiment": "quickstart",
        "config": {"seed": seed, "quick": quick, "beta": beta, "n_gates": n_gates, "adam_steps": steps},
        "versions": {"attnduality": __version__, "torch": torch.__version__, "python": platform.python_version()},
        "data": "scikit-learn digits (8x8), 75/25 split",
        "convex": convex,
        "adam": adam,
    }
    (out / "results.json").write_text(json.dumps(results, indent=2))
    lines = [
        "# Quickstart: convex gated-ReLU network vs Adam on its twin",
        "",
        f"Data: {results['data']}, seed {seed}. Objective `(1/N) Σ CE + β/2 Σ‖θ‖²`, β = {beta}.",
        "",
        "| model | objective | test acc. | seconds |",
        "|---|---|---|---|",
        f"| convex (certified, rel. gap {convex['relative_gap']:.1e}) | {convex['objective']:.6f} | "
        f"{convex['test_accuracy']:.3f} | {convex['seconds']:.1f} |",
    ]
    for run in adam:
        lines.append(
            f"| Adam seed {run['seed']} | {run['final_objective']:.6f} | {run['test_accuracy']:.3f} | "
            f"{run['seconds']:.1f} |"
        )
    below = sum(r["below_convex_optimum"] for r in adam)
    lines += ["", f"Adam runs ending below the certified lower bound: {below} (must be 0).", "", "![](objective.png)"]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    return results
