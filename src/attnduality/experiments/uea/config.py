"""Configuration of the ``uea`` experiment: :class:`UEAConfig` and the published per-dataset settings and accuracies.

The defaults are the setup of Chen et al. 2023 (Primal-Attention, NeurIPS), Table 1, as released in the official
``PrimalAttention_TimeSeries`` code: d_model 512, FFN 2048, 8 heads, 2 layers, dropout 0.1, RAdam lr 1e-3, batch 16,
100 epochs, gradient clipping at norm 4, and per dataset the rank ``s``, KSVD weight ``η`` and landmark multiplier
of the released scripts (:data:`PAPER_HPARAMS`). :data:`PAPER_ACCURACY` holds the published test accuracies.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["MODELS", "PAPER_ACCURACY", "PAPER_HPARAMS", "UEAConfig"]

MODELS = ("primalformer", "primal+trans", "transformer")
"""The models: PrimalFormer (Primal-Attention in every layer), Primal.+Trans. (softmax layers below one Primal-Attention
layer) and the softmax transformer."""

PAPER_HPARAMS: dict[str, dict[str, tuple[int, float, int]]] = {
    # dataset: {model: (s, η, rank_multi)} from the official bashes/run_primalformer.sh and bashes/run_primal_trans.sh
    "EthanolConcentration": {"primalformer": (30, 0.1, 10), "primal+trans": (40, 0.2, 10)},
    "FaceDetection": {"primalformer": (20, 0.1, 5), "primal+trans": (40, 0.2, 5)},
    "Handwriting": {"primalformer": (30, 0.2, 5), "primal+trans": (20, 0.5, 5)},
    "Heartbeat": {"primalformer": (30, 0.5, 10), "primal+trans": (40, 0.5, 10)},
    "JapaneseVowels": {"primalformer": (40, 0.5, 5), "primal+trans": (30, 0.2, 5)},
    "PEMS-SF": {"primalformer": (40, 0.1, 5), "primal+trans": (40, 0.0, 5)},
    "SelfRegulationSCP1": {"primalformer": (30, 0.5, 10), "primal+trans": (30, 0.2, 10)},
    "SelfRegulationSCP2": {"primalformer": (20, 0.0, 10), "primal+trans": (20, 0.2, 10)},
    "SpokenArabicDigits": {"primalformer": (20, 0.1, 5), "primal+trans": (30, 0.2, 5)},
    "UWaveGestureLibrary": {"primalformer": (20, 0.0, 10), "primal+trans": (40, 0.1, 10)},
}
"""Per-dataset (s, η, rank_multi) of the released scripts."""

PAPER_ACCURACY: dict[str, dict[str, float]] = {
    # Table 1 (best test epoch); the Trans. column is copied from Flowformer's table (same numbers), not re-run
    "JapaneseVowels": {"primalformer": 98.4, "primal+trans": 98.9, "transformer": 98.7},
    "SelfRegulationSCP1": {"primalformer": 92.5, "primal+trans": 92.5, "transformer": 92.2},
    "SelfRegulationSCP2": {"primalformer": 57.2, "primal+trans": 56.1, "transformer": 53.9},
}
"""Published test accuracies (%) of Table 1 for the three sets run here."""


_LOADABLE = ("JapaneseVowels", "SelfRegulationSCP1", "SelfRegulationSCP2")  # the sets of Table 1 load_uea serves


def _default_rank() -> dict[str, dict[str, int]]:
    return {d: {m: v[0] for m, v in PAPER_HPARAMS[d].items()} for d in _LOADABLE}


def _default_eta() -> dict[str, dict[str, float]]:
    return {d: {m: v[1] for m, v in PAPER_HPARAMS[d].items()} for d in _LOADABLE}


def _default_rank_multi() -> dict[str, int]:
    return {d: PAPER_HPARAMS[d]["primalformer"][2] for d in _LOADABLE}


def _merge(default: Mapping[str, Any], given: Mapping[str, Any], name: str) -> dict[str, Any]:
    """``given`` on top of ``default``, one level deeper for nested dicts (so an override may name one model)."""
    if not isinstance(given, Mapping):
        raise ValueError(f"{name} must be a mapping, got {type(given).__name__}")
    out = {k: dict(v) if isinstance(v, Mapping) else v for k, v in default.items()}
    for k, v in given.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), dict):
            out[k].update(v)
        else:
            out[k] = dict(v) if isinstance(v, Mapping) else v
    return out


def _check_pos_int(cfg: Any, names: Sequence[str]) -> None:
    for name in names:
        v = getattr(cfg, name)
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {v!r}")


@dataclass(frozen=True)
class UEAConfig:
    """Configuration of the ``uea`` experiment; the defaults are the paper's setup (Chen et al. 2023, Table 1)."""

    datasets: tuple[str, ...] = ("JapaneseVowels", "SelfRegulationSCP1", "SelfRegulationSCP2")
    models: tuple[str, ...] = MODELS
    """any of primalformer, primal+trans, transformer"""
    seeds: int = 3
    """training seeds per (dataset, model); the run's --seed shifts them all"""
    epochs: int = 100
    d_model: int = 512
    layers: int = 2
    heads: int = 8
    ffn: int = 2048
    dropout: float = 0.1
    batch: int = 16
    lr: float = 1e-3
    """RAdam learning rate (constant, as the official code)"""
    grad_clip: float = 4.0
    rank: dict[str, dict[str, int]] = field(default_factory=_default_rank)
    """s per dataset and primal model (an override is merged into the defaults)"""
    eta: dict[str, dict[str, float]] = field(default_factory=_default_eta)
    """KSVD weight η per dataset and primal model (merged into the defaults)"""
    rank_multi: dict[str, int] = field(default_factory=_default_rank_multi)
    """landmark multiplier per dataset: n = min(T, rank_multi·s) (merged into the defaults)"""
    val_fraction: float = 0.2
    """stratified share of the training set held out for the honest protocol"""
    full_train_run: bool = True
    """also train on the whole training set for the paper protocol; False: the paper-protocol number is the best
    test epoch of the holdout run (half the cost, trained on less data)"""
    max_train: int | None = None
    """stratified subsample of the training set (smoke runs); None keeps all"""
    max_test: int | None = None
    """first-come stratified subsample of the test set (smoke runs); None keeps all"""
    eval_batch: int = 64
    spectrum_samples: int = 4
    """test samples for the singular-value decay of the first seed's holdout model (0: no spectrum)"""

    def __post_init__(self) -> None:
        from ...data.uea import UEA_SETS

        object.__setattr__(self, "rank", _merge(_default_rank(), self.rank, "rank"))
        object.__setattr__(self, "eta", _merge(_default_eta(), self.eta, "eta"))
        object.__setattr__(self, "rank_multi", _merge(_default_rank_multi(), self.rank_multi, "rank_multi"))
        object.__setattr__(self, "datasets", tuple(self.datasets))
        object.__setattr__(self, "models", tuple(self.models))
        if not self.datasets:
            raise ValueError("datasets must name at least one UEA set")
        unknown = [d for d in self.datasets if d not in UEA_SETS]
        if unknown:
            raise ValueError(f"unknown UEA datasets {unknown}; available: {sorted(UEA_SETS)}")
        if not self.models or any(m not in MODELS for m in self.models):
            raise ValueError(f"models must be a non-empty subset of {MODELS}, got {self.models}")
        if len(set(self.datasets)) != len(self.datasets) or len(set(self.models)) != len(self.models):
            raise ValueError("datasets and models must not repeat")
        _check_pos_int(self, ("seeds", "epochs", "d_model", "layers", "heads", "ffn", "batch", "eval_batch"))
        if self.d_model % self.heads:
            raise ValueError(f"d_model={self.d_model} is not divisible by heads={self.heads}")
        if "primal+trans" in self.models and self.layers < 2:
            raise ValueError("primal+trans needs layers >= 2 (softmax layers below one primal layer)")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if not self.lr > 0 or not self.grad_clip > 0:
            raise ValueError(f"lr and grad_clip must be > 0, got {self.lr}, {self.grad_clip}")
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        for name in ("max_train", "max_test"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or v < 2):
                raise ValueError(f"{name} must be None or an integer >= 2, got {v!r}")
        if not isinstance(self.spectrum_samples, int) or self.spectrum_samples < 0:
            raise ValueError(f"spectrum_samples must be an integer >= 0, got {self.spectrum_samples!r}")
        for ds in self.datasets:
            for m in self.models:
                if m == "transformer":
                    continue
                s = self.rank.get(ds, {}).get(m)
                e = self.eta.get(ds, {}).get(m)
                if s is None or e is None or ds not in self.rank_multi:
                    raise ValueError(f"no rank/eta/rank_multi for {m} on {ds}; give them with --set rank=/eta=/...")
                rm = self.rank_multi[ds]
                if not isinstance(s, int) or s < 1 or not isinstance(rm, int) or rm < 1:
                    raise ValueError(f"rank and rank_multi of {m} on {ds} must be integers >= 1")
                if not float(e) >= 0:
                    raise ValueError(f"eta of {m} on {ds} must be >= 0, got {e}")

    @classmethod
    def quick(cls) -> UEAConfig:
        """Tiny: JapaneseVowels, D = 32, 4 heads, 4 epochs, one seed (about a minute on one loaded core)."""
        return cls(datasets=("JapaneseVowels",), seeds=1, epochs=4, d_model=32, heads=4, ffn=64, spectrum_samples=2)

    def hparams(self, dataset: str, model: str) -> tuple[int, float, int] | None:
        """(s, η, rank_multi) of a primal model on ``dataset``; None for the softmax transformer."""
        if model == "transformer":
            return None
        return int(self.rank[dataset][model]), float(self.eta[dataset][model]), int(self.rank_multi[dataset])
