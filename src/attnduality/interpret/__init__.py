"""Interpretation tools for fitted convex heads (Sahiner et al. 2022, §3–4; Ergen et al. 2022; Chen et al. 2023).

:mod:`attnduality.interpret.attention` reads the lifted solution ``Z`` of a convex self-attention head: block norms
against the Gram matrices (Corollary 3.2), the singular spectrum (the nuclear norm's low rank; Theorem 3.1), and the
token-pair masks of the gated heads (the "clusters tokens by latent similarity" claim; Theorem 3.3), with figures.
:mod:`attnduality.interpret.spectrum` draws the singular-value decay of attention operators (softmax matrices and
Primal-Attention's implied kernel; Chen et al. 2023, Figure 2).
"""

from .attention import (
    MaskClustering,
    block_norms,
    effective_rank,
    mask_clustering_score,
    mean_gram,
    plot_block_norms_vs_gram,
    plot_spectrum,
    plot_token_masks,
    singular_values,
    token_masks,
)
from .spectrum import (
    attention_operators,
    cumulative_singular_values,
    plot_singular_value_decay,
    singular_value_decay,
)
from .tokens import TokenSparsity, plot_sparsity_vs_beta, sparsity_vs_beta, token_sparsity

__all__ = [
    "MaskClustering",
    "block_norms",
    "effective_rank",
    "mask_clustering_score",
    "mean_gram",
    "plot_block_norms_vs_gram",
    "plot_spectrum",
    "plot_token_masks",
    "singular_values",
    "token_masks",
    "TokenSparsity",
    "plot_sparsity_vs_beta",
    "sparsity_vs_beta",
    "token_sparsity",
    "attention_operators",
    "cumulative_singular_values",
    "plot_singular_value_decay",
    "singular_value_decay",
]
