"""Multi-head softmax attention (Vaswani et al. 2017, eq. (1)), the baseline of the attention registry.

Registered as ``"softmax"`` by :mod:`.registry`; it follows the registry's call convention.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .checks import check_attention_input, check_heads

__all__ = ["SoftmaxAttention"]


def _open_empty_rows(keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Make every row of a boolean attention mask (True = may attend) attend somewhere.

    A query row with no allowed key would give ``softmax`` of all ``-inf`` (NaN values and NaN gradients). Such rows
    are opened to every key here, and the returned ``live`` (…, N, 1) (None when no row was empty) zeroes their
    weights or outputs afterwards, so they come out exactly zero with zero gradients.
    """
    live = keep.any(dim=-1, keepdim=True)
    if bool(live.all()):
        return keep, None
    return keep | ~live, live


class SoftmaxAttention(nn.Module):
    """Multi-head softmax attention ``softmax(Q Kᵀ/√d_h) V`` (Vaswani et al. eq. (1)), batch first.

    ``implementation="sdpa"`` (default) calls :func:`torch.nn.functional.scaled_dot_product_attention` (fused,
    O(N) memory on CPU/GPU); ``"explicit"`` forms the (B, H, N, N) matrix (the reference, and what
    :meth:`attention_matrix` returns). ``dropout`` is applied to the attention weights in training.
    ``max_len`` is accepted and ignored.
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        *,
        max_len: int | None = None,
        causal: bool = False,
        bias: bool = True,
        dropout: float = 0.0,
        implementation: str = "sdpa",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.head_dim = check_heads(embed_dim, num_heads)
        if implementation not in ("sdpa", "explicit"):
            raise ValueError(f"implementation must be 'sdpa' or 'explicit', got {implementation!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if max_len is not None and max_len < 1:
            raise ValueError(f"max_len must be >= 1 or None, got {max_len}")
        self.embed_dim, self.num_heads = embed_dim, num_heads
        self.causal, self.dropout, self.implementation, self.max_len = (
            bool(causal),
            float(dropout),
            implementation,
            max_len,
        )
        kw: dict[str, Any] = {"device": device, "dtype": dtype}
        self.qkv_proj = nn.Linear(embed_dim, 3 * embed_dim, bias=bias, **kw)
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias, **kw)

    def _qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, n, _ = x.shape
        qkv = self.qkv_proj(x).view(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        return qkv[0], qkv[1], qkv[2]  # (B, H, N, d_h) each

    def _mask(self, key_padding_mask: torch.Tensor | None, n: int, device: torch.device) -> torch.Tensor | None:
        """Boolean (B, 1, N|1, N) mask, True = may attend; None when nothing is masked."""
        keep = None if key_padding_mask is None else (~key_padding_mask)[:, None, None, :]
        if self.causal:
            tri = torch.ones(n, n, dtype=torch.bool, device=device).tril()[None, None]
            keep = tri if keep is None else keep & tri
        return keep

    def attention_matrix(self, x: torch.Tensor, key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        """The (B, H, N, N) softmax matrix: padding columns and, if causal, the future are zero.

        Rows are stochastic except a query with no allowed key (a padding query before the first real token of a
        causal, left-padded sequence), whose row is zero.
        """
        check_attention_input(x, key_padding_mask, self.embed_dim)
        q, k, _ = self._qkv(x)
        return self._weights(q, k, key_padding_mask)

    def _weights(self, q: torch.Tensor, k: torch.Tensor, key_padding_mask: torch.Tensor | None) -> torch.Tensor:
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(self.head_dim)
        keep = self._mask(key_padding_mask, q.shape[2], q.device)
        if keep is None:
            return scores.softmax(dim=-1)
        keep, live = _open_empty_rows(keep)
        weights = scores.masked_fill(~keep, float("-inf")).softmax(dim=-1)
        return weights if live is None else weights * live.to(weights.dtype)

    def forward(self, x: torch.Tensor, key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        check_attention_input(x, key_padding_mask, self.embed_dim)
        b, n, d = x.shape
        p = self.dropout if self.training else 0.0
        q, k, v = self._qkv(x)
        if self.implementation == "explicit":
            out = F.dropout(self._weights(q, k, key_padding_mask), p) @ v
        else:
            if key_padding_mask is None:
                out = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=self.causal)
            else:
                keep, live = _open_empty_rows(self._mask(key_padding_mask, n, x.device))
                out = F.scaled_dot_product_attention(q, k, v, attn_mask=keep, dropout_p=p)
                if live is not None:
                    out = out * live.to(out.dtype)
        return self.out_proj(out.transpose(1, 2).reshape(b, n, d))
