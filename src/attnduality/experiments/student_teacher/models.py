"""Modules of the ``student-teacher`` experiment (Ergen, Neyshabur & Mehta 2022, §4).

* :func:`teacher_attention`: MiniLM's last self-attention as a library :class:`~attnduality.nn.SoftmaxAttention`
  with the teacher's weights;
* :func:`last_layer_student`: MiniLM's last layer with its attention replaced (part A), and
  :func:`layer_attention`, the fresh softmax or convex attention (eq. (4)) put there;
* :func:`cls_attention`: a softmax attention's output and attention row at the [CLS] position;
* :func:`head_model`, :func:`head_forward`, :func:`head_decay`: the attention-only heads of part B (the softmax head
  of eq. (3) restricted to the [CLS] query, and the convex-attention twin of eq. (11)) and their regularisers.
"""

from __future__ import annotations

import copy
import math
from typing import Any

from .config import MINILM_WIDTH, StudentTeacherConfig

__all__ = [
    "cls_attention",
    "head_decay",
    "head_forward",
    "head_model",
    "last_layer_student",
    "layer_attention",
    "teacher_attention",
]


def teacher_attention(bert_layer: Any) -> Any:
    """MiniLM's last self-attention (``W_Q, W_K, W_V`` and the output projection) as a library
    :class:`~attnduality.nn.SoftmaxAttention` with the teacher's weights (same 1/√d_h scaling)."""
    import torch

    from ...nn import SoftmaxAttention

    sa, out = bert_layer.attention.self, bert_layer.attention.output.dense
    attn = SoftmaxAttention(MINILM_WIDTH, sa.num_attention_heads, bias=True, implementation="explicit")
    with torch.no_grad():
        attn.qkv_proj.weight.copy_(torch.cat([sa.query.weight, sa.key.weight, sa.value.weight]))
        attn.qkv_proj.bias.copy_(torch.cat([sa.query.bias, sa.key.bias, sa.value.bias]))
        attn.out_proj.weight.copy_(out.weight)
        attn.out_proj.bias.copy_(out.bias)
    for p in attn.parameters():
        p.requires_grad_(False)
    return attn.eval()


def _last_layer_student_class() -> type:
    from torch import nn

    class _LastLayerStudent(nn.Module):
        """MiniLM's last layer with its attention replaced by ``attn`` (part A): ``h = LN₁(attn(X) + X)``,
        ``out = LN₂(FFN(h) + h)`` with the teacher's frozen LayerNorms and feed-forward part."""

        def __init__(self, attn: nn.Module, bert_layer: nn.Module) -> None:
            super().__init__()
            self.attn = attn
            layer = copy.deepcopy(bert_layer).eval()
            for p in layer.parameters():
                p.requires_grad_(False)
            self.ln1 = layer.attention.output.LayerNorm
            self.intermediate = layer.intermediate
            self.output = layer.output

        def forward(self, x: Any, key_padding_mask: Any = None) -> Any:
            h = self.ln1(self.attn(x, key_padding_mask) + x)
            return self.output(self.intermediate(h), h)

        def train(self, mode: bool = True) -> _LastLayerStudent:  # the frozen teacher parts stay in eval mode
            super().train(mode)
            for m in (self.ln1, self.intermediate, self.output):
                m.eval()
            return self

    return _LastLayerStudent


def last_layer_student(attn: Any, bert_layer: Any) -> Any:
    """MiniLM's last layer (``bert_layer``, copied and frozen) with its attention replaced by ``attn`` (part A)."""
    return _last_layer_student_class()(attn, bert_layer)


def cls_attention(attn: Any, x: Any, key_padding_mask: Any = None) -> tuple[Any, Any]:
    """The output of a :class:`~attnduality.nn.SoftmaxAttention` at position 0 ([CLS]) and its attention row,
    computed with the [CLS] query only: ``(out (B, D), weights (B, H, n))``; equals ``attn(x)[:, 0]``."""
    import torch
    import torch.nn.functional as F

    b, n, d = x.shape
    h, dh = attn.num_heads, attn.head_dim
    w, bias = attn.qkv_proj.weight, attn.qkv_proj.bias
    q = F.linear(x[:, :1], w[:d], None if bias is None else bias[:d]).view(b, 1, h, dh).transpose(1, 2)
    kv = F.linear(x, w[d:], None if bias is None else bias[d:]).view(b, n, 2, h, dh).permute(2, 0, 3, 1, 4)
    scores = (q @ kv[0].transpose(-2, -1)) / math.sqrt(dh)  # (B, H, 1, n)
    if key_padding_mask is not None:
        scores = scores.masked_fill(key_padding_mask[:, None, None, :], float("-inf"))
    p = torch.softmax(scores, dim=-1)
    out = (p @ kv[1]).transpose(1, 2).reshape(b, d)
    return attn.out_proj(out), p[:, :, 0]


def layer_attention(model: str, n_heads: int, max_len: int, seed: int) -> Any:
    """A freshly initialised (seeded) softmax or convex attention (eq. (4)) for the part-A student layer."""
    import torch

    from ...nn import ConvexAttention, SoftmaxAttention

    torch.manual_seed(seed)
    if model == "softmax":
        return SoftmaxAttention(MINILM_WIDTH, n_heads, implementation="explicit")
    return ConvexAttention(
        MINILM_WIDTH, n_heads, max_len=max_len, parametrization="simplex" if model == "convex-simplex" else "softmax"
    )


def head_model(model: str, n_tokens: int, cfg: StudentTeacherConfig, seed: int) -> Any:
    """A freshly initialised (seeded) part-B head: the softmax head (eq. (3)) or the convex twin (eq. (11))."""
    import torch

    from ...nn import AttentionOnlyNet, SoftmaxAttention

    torch.manual_seed(seed)
    if model == "softmax":
        return SoftmaxAttention(MINILM_WIDTH, cfg.n_heads, bias=False)
    net = AttentionOnlyNet.random(
        n_tokens, MINILM_WIDTH, cfg.twin_heads, MINILM_WIDTH, seed=seed, output_norm="l1", parametrization="simplex"
    )
    with torch.no_grad():  # b_j ~ N(0, 1/(h·c)): ‖b_j‖_1 of order one instead of √c
        net.b.div_(math.sqrt(MINILM_WIDTH))
    return net


def head_forward(net: Any, model: str, x: Any, pad: Any) -> Any:
    """The (B, d) output of a part-B head: the softmax head at [CLS], the twin on the whole sequence."""
    return cls_attention(net, x, pad)[0] if model == "softmax" else net(x)


def head_decay(net: Any, model: str) -> Any:
    """The regulariser R of a part-B head (multiplied by β in the objective)."""
    if model == "softmax":  # eq. (3): β/2 (‖W_Q‖² + ‖W_K‖² + ‖W_V‖² + ‖W_O‖²)
        return 0.5 * (net.qkv_proj.weight.square().sum() + net.out_proj.weight.square().sum())
    return net.weight_decay()
