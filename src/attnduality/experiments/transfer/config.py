"""The transfer experiment's targets, heads and configuration (Sahiner et al. 2022 §5 on offline substitutes)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["BASELINES", "DATASETS", "DATASET_LABELS", "HEADS", "HeadSpec", "TransferConfig"]

DATASETS = ("pang_lee", "fashion_mnist")
DATASET_LABELS = {
    "pang_lee": "Pang & Lee sentences on frozen MiniLM (substitute)",
    "fashion_mnist": "Fashion-MNIST on frozen MNIST-ViT (substitute)",
}


@dataclass(frozen=True)
class HeadSpec:
    """One head: its family (``linear``, ``mlp``, ``attention``, ``mixer``, ``fno``), kind and whether it is B-FNO."""

    key: str
    label: str
    family: str
    kind: str
    bfno: bool = False

    @property
    def tokens(self) -> bool:
        """Whether the head reads the token array (the baselines read the mean token)."""
        return self.family in ("attention", "mixer", "fno")

    @property
    def gated(self) -> bool:
        return self.kind == "gated_relu"


HEADS: dict[str, HeadSpec] = {
    h.key: h
    for h in (
        HeadSpec("logreg", "logistic regression (nuclear-norm linear, eq. 6)", "linear", "linear"),
        HeadSpec("mlp", "convex gated-ReLU MLP (eq. 8)", "mlp", "gated_relu"),
        HeadSpec("attn_linear", "linear self-attention (Thm 3.1)", "attention", "linear"),
        HeadSpec("attn_gated", "gated-ReLU self-attention", "attention", "gated_relu"),
        HeadSpec("mixer_linear", "linear MLP-Mixer (Thm 4.1)", "mixer", "linear"),
        HeadSpec("mixer_gated", "gated-ReLU MLP-Mixer", "mixer", "gated_relu"),
        HeadSpec("fno_linear", "linear FNO (Thm 4.4)", "fno", "linear"),
        HeadSpec("fno_gated", "gated-ReLU FNO", "fno", "gated_relu"),
        HeadSpec("bfno_linear", "linear B-FNO (Thm 4.7)", "fno", "linear", bfno=True),
        HeadSpec("bfno_gated", "gated-ReLU B-FNO", "fno", "gated_relu", bfno=True),
    )
}
BASELINES = ("logreg", "mlp")


@dataclass(frozen=True)
class TransferConfig:
    """Configuration of the transfer experiment (defaults: a CPU-sized run; the paper's sizes are in comments)."""

    datasets: tuple[str, ...] = DATASETS
    heads: tuple[str, ...] = tuple(HEADS)
    n_train: int | None = 2000
    """training samples per target, validation part included (None: all, 3,000 sentences / 60,000 images)"""
    n_test: int | None = None
    """test samples per target (None: all, 1,000 sentences / 10,000 images)"""
    val_fraction: float = 0.2
    """stratified share of the training samples used to choose β"""
    beta_fracs: tuple[float, ...] = (0.3, 0.1, 0.03, 0.01, 0.003)
    """β / β_max candidates (one value: no selection)"""
    pool_dim: int = 20
    """channels after average pooling (paper: 100)"""
    max_tokens: int | None = 32
    """MiniLM tokens kept per sentence ([CLS] included; None: all)"""
    minilm_layer: int = -1
    gates_attention: int = 5
    """gates of the gated self-attention head (paper: 5)"""
    gates_mlp: int = 100
    """gates of the convex MLP (paper: 100)"""
    gates_mixer: int = 2
    """gates of the gated Mixer (paper: 100)"""
    gates_fno: int = 20
    """gates (per group) of the gated FNO / B-FNO (paper: 100)"""
    bfno_blocks: int = 5
    """B of B-FNO (paper: 5)"""
    tol: float = 1e-4
    """certified relative duality gap of the final fits"""
    val_tol: float = 1e-3
    """certified relative duality gap of the β-selection fits"""
    max_iter: int = 5000
    dtype: str = "float64"
    cache_gb: float = 2.0
    """lifted token features kept in memory during a fit when they fit in this many GB (else recomputed per pass)"""
    adam_steps: int = 1000
    """full-batch Adam steps on each twin (0: no Adam)"""
    adam_lr: float = 1e-2
    """initial Adam learning rate (cosine-annealed to 1/100 of it)"""
    checkpoint_every: int = 200
    full_width_reference: bool = True
    """also fit the logistic baseline on the unpooled mean token (MiniLM d = 384, ViT d = 64): a reference outside the
    claim that shows what the channel pooling costs"""
    vit_seed: int = 0
    vit_epochs: int = 2
    vit_pretrain_n: int | None = None
    """MNIST images used to pre-train the ViT (None: all 60,000)"""
    vit_patch_size: int = 4
    vit_dim: int = 64
    vit_depth: int = 4
    vit_heads: int = 4

    def __post_init__(self) -> None:
        if not self.datasets or len(set(self.datasets)) != len(self.datasets):
            raise ValueError(f"datasets must be a non-empty tuple without repeats, got {self.datasets!r}")
        bad = [d for d in self.datasets if d not in DATASETS]
        if bad:
            raise ValueError(f"unknown datasets {bad}; choose from {DATASETS}")
        if not self.heads or len(set(self.heads)) != len(self.heads):
            raise ValueError(f"heads must be a non-empty tuple without repeats, got {self.heads!r}")
        bad = [h for h in self.heads if h not in HEADS]
        if bad:
            raise ValueError(f"unknown heads {bad}; choose from {tuple(HEADS)}")
        for name in ("n_train", "n_test", "max_tokens", "vit_pretrain_n"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
                raise ValueError(f"{name} must be a positive integer or None, got {v!r}")
        if self.n_train is not None and self.n_train < 20:
            raise ValueError(f"n_train must be >= 20 (fit and validation parts need every class), got {self.n_train}")
        if self.max_tokens is not None and self.max_tokens < 2:
            raise ValueError(f"max_tokens must be >= 2 ([CLS] and one word) or None, got {self.max_tokens}")
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"val_fraction must lie in (0, 1), got {self.val_fraction}")
        if not self.beta_fracs or any(not (0 < f < 1) for f in self.beta_fracs):
            raise ValueError(f"beta_fracs must be a non-empty tuple of numbers in (0, 1), got {self.beta_fracs!r}")
        if len(set(self.beta_fracs)) != len(self.beta_fracs):
            raise ValueError(f"beta_fracs must not repeat values, got {self.beta_fracs!r}")
        ints = ("pool_dim", "gates_attention", "gates_mlp", "gates_mixer", "gates_fno", "bfno_blocks", "max_iter",
                "checkpoint_every", "vit_epochs", "vit_patch_size", "vit_dim", "vit_depth", "vit_heads")
        for name in ints:
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
        for name in ("adam_steps", "vit_seed"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {v!r}")
        for name in ("tol", "val_tol"):
            if not 0 < getattr(self, name) < 1:
                raise ValueError(f"{name} must lie in (0, 1), got {getattr(self, name)}")
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be 'float32' or 'float64', got {self.dtype!r}")
        if not self.cache_gb >= 0:
            raise ValueError(f"cache_gb must be >= 0, got {self.cache_gb}")
        if not self.adam_lr > 0:
            raise ValueError(f"adam_lr must be > 0, got {self.adam_lr}")
        if not -7 <= self.minilm_layer <= 6:
            raise ValueError(f"minilm_layer must lie in -7..6, got {self.minilm_layer}")

    @classmethod
    def quick(cls) -> TransferConfig:
        return cls(n_train=400, n_test=400, pool_dim=10, max_tokens=16, beta_fracs=(0.03, 0.01), gates_attention=3,
                   gates_mlp=20, gates_mixer=1, gates_fno=5, tol=1e-3, val_tol=3e-3, max_iter=2000, adam_steps=200,
                   checkpoint_every=100)
