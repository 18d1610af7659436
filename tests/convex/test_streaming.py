"""Token sources (in memory and memory-mapped) and the streamed gated-attention operator.

The streamed operator must equal :class:`GatedAttentionOperator` (itself checked against the theorem's explicit
loops in ``test_attention_operators.py``) for every product: dense forward and adjoint, and the reduced features
``H`` of a left basis (``A(Q Bᵀ) = Σ H·B``); a memory-mapped file must give the same numbers as the array it holds.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attnduality.convex.operators import streamed_attention
from attnduality.convex.operators.attention import GatedAttentionOperator
from attnduality.convex.operators.streamed_attention import StreamedGatedAttention
from attnduality.convex.streaming import ArrayTokens, MemmapTokens, write_tokens


def _data(n: int = 23, s: int = 5, d: int = 4, m: int = 3, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, s, d, generator=gen, dtype=torch.float64)
    gates = torch.randn(m, d, d, generator=gen, dtype=torch.float64)
    return x, gates, gen


@pytest.mark.parametrize("chunk,block,cache", [(1, 1, None), (4, 10, None), (None, None, None), (None, 9, 1)])
def test_streamed_operator_equals_gated_operator(chunk, block, cache, monkeypatch):
    if cache is not None:  # one sample per inner step
        monkeypatch.setattr(streamed_attention, "_CACHE_ENTRIES", cache)
    x, gates, gen = _data()
    c = 3
    ref = GatedAttentionOperator(x, gates, c, scale=0.7)
    st = StreamedGatedAttention(ArrayTokens(x), gates, c, scale=0.7, chunk_size=chunk)
    if block is not None:
        st.block_size = block
    z = torch.randn(ref.z_shape, generator=gen, dtype=torch.float64)
    g = torch.randn(x.shape[0], c, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(st.forward(z), ref.forward(z), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(st.adjoint(g), ref.adjoint(g), rtol=1e-12, atol=1e-12)
    # the adjoint over the first samples only
    sub = GatedAttentionOperator(x[:7], gates, c, scale=0.7).adjoint(g[:7])
    torch.testing.assert_close(st.adjoint(g, stop=7), sub, rtol=1e-12, atol=1e-12)


def test_expand_pairs_into_a_buffer():
    """One dense block at a time, into a reused buffer: each block is the reference adjoint's, whatever the buffer
    held before; a buffer of the wrong shape is refused."""
    x, gates, gen = _data()
    c, d = 3, x.shape[2]
    st = StreamedGatedAttention(ArrayTokens(x), gates, c)
    g = torch.randn(x.shape[0], c, generator=gen, dtype=torch.float64)
    ref = GatedAttentionOperator(x, gates, c).adjoint(g)
    pairs = st.adjoint_pairs(g)
    buf = torch.full((d * d, d * c), float("nan"), dtype=torch.float64)
    for j in range(gates.shape[0]):
        out = st.expand_pairs(pairs, j, out=buf)
        assert out.data_ptr() == buf.data_ptr()
        torch.testing.assert_close(out, ref[j], rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="out must be"):
        st.expand_pairs(pairs, 0, out=torch.empty(d * d, d * c + 1, dtype=torch.float64))


@pytest.mark.parametrize("cache", [None, 1])
def test_subspace_features_reproduce_the_forward(cache, monkeypatch):
    if cache is not None:  # one sample per inner step
        monkeypatch.setattr(streamed_attention, "_CACHE_ENTRIES", cache)
    x, gates, gen = _data()
    m, d, c, k = 3, 4, 2, 5
    ref = GatedAttentionOperator(x, gates, c)
    st = StreamedGatedAttention(ArrayTokens(x), gates, c, chunk_size=6)
    q = torch.linalg.qr(torch.randn(m, d * d, k, generator=gen, dtype=torch.float64)).Q
    b = torch.randn(m, d * c, k, generator=gen, dtype=torch.float64)
    h = st.subspace_features(q)
    assert h.shape == (k, x.shape[0], m, d)
    out = torch.einsum("qnjl,jlbq->nb", h, b.reshape(m, d, c, k))
    torch.testing.assert_close(out, ref.forward(q @ b.mT), rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match=r"basis must be \(m, d², k\) = \(3, 16, k\)"):
        st.subspace_features(q[:, :5])


def test_memmap_tokens_match_the_array(tmp_path):
    x, gates, gen = _data(n=17)
    path = tmp_path / "tokens.npy"
    arr = x.numpy().astype(np.float32)
    mm = write_tokens(path, arr.shape, lambda lo, hi: arr[lo:hi], chunk=5)
    assert isinstance(mm, MemmapTokens) and (mm.n_samples, mm.n_tokens, mm.n_features) == (17, 5, 4)
    chunks = list(mm.chunks(4, torch.float64))
    assert [(lo, hi) for lo, hi, _ in chunks] == [(0, 4), (4, 8), (8, 12), (12, 16), (16, 17)]
    torch.testing.assert_close(torch.cat([c for *_, c in chunks]), torch.as_tensor(arr, dtype=torch.float64))
    g = torch.randn(17, 2, generator=gen, dtype=torch.float64)
    a = StreamedGatedAttention(mm, gates, 2, chunk_size=3).adjoint(g)
    b = StreamedGatedAttention(ArrayTokens(arr.astype(np.float64)), gates, 2).adjoint(g)
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_token_sources_reject_bad_input(tmp_path):
    with pytest.raises(ValueError, match=r"must be \(n_samples, n_tokens, n_features\), got shape \(3, 4\)"):
        ArrayTokens(np.zeros((3, 4)))
    with pytest.raises(ValueError, match="must be non-empty"):
        ArrayTokens(np.zeros((0, 4, 2)))
    with pytest.raises(ValueError, match="must be floating point"):
        ArrayTokens(np.zeros((2, 4, 2), dtype=np.int64))
    with pytest.raises(ValueError, match="does not exist"):
        MemmapTokens(tmp_path / "missing.npy")
    bad = np.zeros((5, 2, 2))
    bad[3, 1, 0] = np.nan
    src = ArrayTokens(bad)
    with pytest.raises(ValueError, match=r"NaN or inf \(sample 3\)"):
        list(src.chunks(2))
    with pytest.raises(ValueError, match=r"sample range 0:9 outside 0:5"):
        src.read(0, 9)
    with pytest.raises(ValueError, match=r"fill\(0, 2\) returned shape \(2, 3\)"):
        write_tokens(tmp_path / "t.npy", (2, 3, 1), lambda lo, hi: np.zeros((hi - lo, 3)))
    x, gates, _ = _data()
    with pytest.raises(ValueError, match=r"gates must be \(m, 4, 4\)"):
        StreamedGatedAttention(ArrayTokens(x), gates[:, :2], 2)
