"""Configuration of the ``student-teacher`` experiment (Ergen, Neyshabur & Mehta 2022, §4).

:class:`StudentTeacherConfig`; the defaults are a CPU-sized budget: 2,000 Pang & Lee sentences of at most 32
word pieces through the frozen all-MiniLM-L6-v2 teacher, two seeds, 600 Adam steps for the part-A students and 1,500
for the part-B heads, and the β grid of the convex program as fractions of β_max.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["HEAD_MODELS", "LAYER_MODELS", "MINILM_WIDTH", "StudentTeacherConfig"]

LAYER_MODELS = ("softmax", "convex", "convex-simplex")
"""Attentions of the part-A student: softmax, convex (rows as a softmax of logits), convex-simplex (projected rows)."""
HEAD_MODELS = ("softmax", "twin")
"""Non-convex attention-only heads of part B: the softmax head and the convex-attention twin."""
MINILM_WIDTH = 384
"""Width d of all-MiniLM-L6-v2 (the teacher and every student)."""


@dataclass(frozen=True)
class StudentTeacherConfig:
    """Configuration of the student–teacher experiment (defaults: a CPU-sized budget)."""

    n_sentences: int = 2000
    """Pang & Lee sentences used (a seeded random subset of the 4,000)"""
    max_length: int = 32
    """word pieces per sentence, [CLS] and [SEP] included (longer sentences are truncated)"""
    test_frac: float = 0.25
    val_frac: float = 0.2
    """share of the training sentences held out to choose β (part B)"""
    seeds: tuple[int, ...] = (0, 1)
    """initialisations of the non-convex students (offset by the run's --seed × 1000)"""
    n_heads: int = 12
    """heads of the student attention layers (MiniLM: 12)"""
    layer_models: tuple[str, ...] = ("softmax", "convex")
    """any of "softmax", "convex" (mixing rows as softmax of logits) and "convex-simplex" (the rows themselves,
    projected onto the simplex after each Adam step)"""
    layer_steps: int = 600
    layer_batch: int = 32
    layer_lr: float = 1e-3
    head_models: tuple[str, ...] = ("softmax", "twin")
    head_steps: int = 1500
    head_batch: int = 64
    head_lr: float = 1e-3
    twin_heads: int = 64
    beta_fracs: tuple[float, ...] = (0.1, 0.01, 0.001)
    """β grid as fractions of β_max"""
    convex_program: bool = True
    fista_max_iter: int = 300
    fista_tol: float = 1e-4
    fista_check_every: int = 10
    eval_every: int = 50
    checkpoint_every: int = 200
    eval_train_sentences: int = 256
    """training sentences used for the train-error curve of part A"""

    def __post_init__(self) -> None:
        for name in (
            "n_sentences",
            "max_length",
            "n_heads",
            "layer_steps",
            "layer_batch",
            "head_steps",
            "head_batch",
            "twin_heads",
            "fista_max_iter",
            "fista_check_every",
            "eval_every",
            "checkpoint_every",
            "eval_train_sentences",
        ):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
        if not 4 <= self.max_length <= 512:
            raise ValueError(f"max_length must lie in 4..512, got {self.max_length}")
        if not 8 <= self.n_sentences <= 4000:
            raise ValueError(f"n_sentences must lie in 8..4000 (Pang & Lee has 4,000), got {self.n_sentences}")
        if MINILM_WIDTH % self.n_heads:
            raise ValueError(f"n_heads must divide {MINILM_WIDTH}, got {self.n_heads}")
        for name in ("test_frac", "val_frac"):
            if not 0.0 < getattr(self, name) < 1.0:
                raise ValueError(f"{name} must lie in (0, 1), got {getattr(self, name)}")
        if (
            not self.seeds
            or any(not isinstance(s, int) or s < 0 for s in self.seeds)
            or len(set(self.seeds)) != len(self.seeds)
        ):
            raise ValueError(f"seeds must be distinct integers >= 0, got {self.seeds}")
        if any(m not in LAYER_MODELS for m in self.layer_models) or len(set(self.layer_models)) != len(
            self.layer_models
        ):
            raise ValueError(f"layer_models must be distinct names from {LAYER_MODELS}, got {self.layer_models}")
        if any(m not in HEAD_MODELS for m in self.head_models) or len(set(self.head_models)) != len(self.head_models):
            raise ValueError(f"head_models must be distinct names from {HEAD_MODELS}, got {self.head_models}")
        if not self.beta_fracs or any(not 0.0 < b < 1.0 for b in self.beta_fracs):
            raise ValueError(f"beta_fracs must be numbers in (0, 1), got {self.beta_fracs}")
        if not self.layer_lr > 0 or not self.head_lr > 0 or not 0 < self.fista_tol < 1:
            raise ValueError("layer_lr and head_lr must be > 0 and fista_tol in (0, 1)")
        n_test = int(round(self.test_frac * self.n_sentences))
        n_val = int(round(self.val_frac * (self.n_sentences - n_test)))
        if n_test < 1 or n_val < 1 or self.n_sentences - n_test - n_val < 2:
            raise ValueError(
                f"n_sentences={self.n_sentences} with test_frac={self.test_frac}, val_frac="
                f"{self.val_frac} leaves an empty test, validation or fit set"
            )

    @classmethod
    def quick(cls) -> StudentTeacherConfig:
        """Tiny: 120 sentences of 16 word pieces, one seed, 40 steps per model."""
        return cls(
            n_sentences=120,
            max_length=16,
            seeds=(0,),
            layer_steps=40,
            head_steps=40,
            twin_heads=8,
            beta_fracs=(0.1, 0.01),
            fista_max_iter=40,
            eval_every=10,
            checkpoint_every=20,
            eval_train_sentences=32,
        )
