"""Fastformer layer: equations, padding-mask invariance, finiteness, linear memory, gradients."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from newsrank.fastformer import Fastformer, FastformerEncoder


def _inputs(b=3, length=7, dim=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, length, dim, generator=g)
    lengths = torch.tensor([length, 4, 0])[:b]  # a full row, a padded row, an all-padding row
    mask = torch.arange(length)[None, :] < lengths[:, None]  # [B, L]
    return x, mask


@pytest.mark.parametrize("cls", [Fastformer, FastformerEncoder])
def test_shapes(cls):
    torch.manual_seed(0)
    x, mask = _inputs()
    layer = cls(8, 2)
    assert layer(x, mask).shape == (3, 7, 8)
    assert layer(x).shape == (3, 7, 8)


def test_encoder_variants_shapes():
    torch.manual_seed(0)
    x, mask = _inputs()
    for enc in (FastformerEncoder(8, 4, layers=3), FastformerEncoder(8, 2, layers=2, dropout=0.1, layer_norm=True)):
        enc.eval()
        out = enc(x, mask)
        assert out.shape == (3, 7, 8) and torch.isfinite(out).all()


@pytest.mark.parametrize("dim,heads", [(10, 3), (8, 0), (8, 16)])
def test_bad_heads_raise(dim, heads):
    with pytest.raises(ValueError):
        Fastformer(dim, heads)
    with pytest.raises(ValueError):
        FastformerEncoder(dim, heads)


@pytest.mark.parametrize(
    "make", [lambda: Fastformer(8, 2), lambda: FastformerEncoder(8, 2, layers=2, layer_norm=True)]
)
def test_padding_contents_and_count_do_not_matter(make):
    torch.manual_seed(0)
    layer = make().eval()
    x, mask = _inputs()
    ref = layer(x, mask)

    # 1. junk in the padding positions (large values; and inf / NaN, which must not leak either)
    for junk in (100 * torch.randn_like(x), torch.full_like(x, float("inf")), torch.full_like(x, float("nan"))):
        x2 = torch.where(mask[..., None], x, junk)
        out = layer(x2, mask)
        assert torch.allclose(out[mask], ref[mask], atol=1e-6)

    # 2. more padding positions appended, filled with junk
    extra = 5
    x3 = torch.cat([x, 50 * torch.randn(3, extra, 8)], dim=1)
    mask3 = torch.cat([mask, torch.zeros(3, extra, dtype=torch.bool)], dim=1)
    out3 = layer(x3, mask3)
    assert torch.allclose(out3[:, :7][mask], ref[mask], atol=1e-6)

    # 3. a row alone, cut to its real length, gives the same real outputs as inside the batch
    alone = layer(x[1:2, :4], None)
    assert torch.allclose(alone[0], ref[1, :4], atol=1e-6)


def test_all_padding_row_is_finite():
    torch.manual_seed(0)
    layer = Fastformer(8, 2)
    x = 1e4 * torch.randn(2, 5, 8)
    mask = torch.zeros(2, 5, dtype=torch.bool)
    out = layer(x, mask)
    assert torch.isfinite(out).all()
    # nothing real to pool: g_q = g_k = 0, so out_i = b_o + q_i
    q = layer.query(x)
    assert torch.allclose(out, layer.transform.bias + q)


def _reference(layer: Fastformer, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The module-doc equations for one row, written plainly with loops over positions and heads."""
    length, dim = x.shape
    h, d = layer.heads, layer.head_dim
    real = [i for i in range(length) if mask[i]]
    q = [layer.query.weight @ x[i] + layer.query.bias for i in range(length)]
    k = [layer.key.weight @ x[i] + layer.key.bias for i in range(length)]
    v = [layer.value.weight @ x[i] + layer.value.bias for i in range(length)]
    out = []
    u = [torch.zeros(dim, dtype=x.dtype) for _ in range(length)]
    for head in range(h):
        sl = slice(head * d, (head + 1) * d)
        wq, wk = layer.query_att[head], layer.key_att[head]
        e = {i: math.exp(float(wq @ q[i][sl]) / math.sqrt(d)) for i in real}
        gq = sum(e[i] / sum(e.values()) * q[i][sl] for i in real)
        p = {i: gq * k[i][sl] for i in real}
        e = {i: math.exp(float(wk @ p[i]) / math.sqrt(d)) for i in real}
        gk = sum(e[i] / sum(e.values()) * p[i] for i in real)
        for i in real:
            u[i][sl] = gk * v[i][sl]
    for i in range(length):
        out.append(layer.transform.weight @ u[i] + layer.transform.bias + q[i])
    return torch.stack(out)


@pytest.mark.parametrize("heads", [1, 2])
def test_matches_plain_reference(heads):
    torch.manual_seed(1)
    layer = Fastformer(4, heads).double()
    with torch.no_grad():  # make the score vectors matter (default init is small)
        layer.query_att.mul_(3)
        layer.key_att.mul_(3)
    x = torch.randn(2, 5, 4, dtype=torch.float64)
    mask = torch.tensor([[True] * 5, [True, True, True, False, False]])
    with torch.no_grad():
        out = layer(x, mask)
        for row in range(2):
            ref = _reference(layer, x[row], mask[row])
            n = int(mask[row].sum())
            torch.testing.assert_close(out[row, :n], ref[:n], rtol=1e-12, atol=1e-12)


def test_hand_computed_example():
    """Identity projections, zero biases and zero score vectors (uniform pooling weights):
    x_1 = (1, 2, 0, 1), x_2 = (3, 0, 1, 1), position 3 is padding.
    g_q = mean x = (2, 1, .5, 1); p_1 = (2, 2, 0, 1), p_2 = (6, 0, .5, 1); g_k = (4, 1, .25, 1);
    u_1 = (4, 2, 0, 1), u_2 = (12, 0, .25, 1); out_i = u_i + q_i = u_i + x_i."""
    layer = Fastformer(4, 2)
    with torch.no_grad():
        for lin in (layer.query, layer.key, layer.value, layer.transform):
            lin.weight.copy_(torch.eye(4))
            lin.bias.zero_()
        layer.query_att.zero_()
        layer.key_att.zero_()
    x = torch.tensor([[[1.0, 2, 0, 1], [3, 0, 1, 1], [7, -7, 9, 99]]])
    mask = torch.tensor([[True, True, False]])
    out = layer(x, mask)
    expected = torch.tensor([[5.0, 4, 0, 2], [15, 0, 1.25, 2]])
    torch.testing.assert_close(out[0, :2], expected)

    # now non-uniform weights, head 0 only: w_q = (ln 3 * sqrt 2, 0) makes alpha ∝ exp(ln 3 * q[0])
    with torch.no_grad():
        layer.query_att[0] = torch.tensor([math.log(3) * math.sqrt(2), 0.0])
    out = layer(x, mask)
    # head 0 (dims 0-1): alpha ∝ (3^1, 3^3) = (1/10, 9/10); g_q = (.1*1 + .9*3, .1*2 + 0) = (2.8, .2)
    # p_1 = (2.8, .4), p_2 = (8.4, 0); g_k = mean = (5.6, .2); u_1 = (5.6, .4), u_2 = (16.8, 0)
    # head 1 (dims 2-3) is unchanged: u_1 = (0, 1), u_2 = (.25, 1)
    expected = torch.tensor([[6.6, 2.4, 0, 2], [19.8, 0, 1.25, 2]])
    torch.testing.assert_close(out[0, :2], expected)


class _LargestTensor(TorchDispatchMode):
    """Records the largest number of elements any op produces (forward and backward)."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        result = func(*args, **(kwargs or {}))
        for t in result if isinstance(result, (tuple, list)) else (result,):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return result


def test_linear_memory_no_length_squared_intermediate():
    torch.manual_seed(0)
    length, dim = 6400, 32
    layer = Fastformer(dim, 4)
    x = torch.randn(1, length, dim, requires_grad=True)
    mask = torch.ones(1, length, dtype=torch.bool)
    mask[0, -100:] = False
    with _LargestTensor() as probe:
        out = layer(x, mask)
        out[mask].sum().backward()
    assert out.shape == (1, length, dim)
    # the biggest tensors are [L, dim]-sized activations; an attention matrix would be L * L
    assert probe.largest <= length * dim
    assert probe.largest < length * length


def test_gradients_flow_with_masks():
    torch.manual_seed(0)
    enc = FastformerEncoder(8, 2, layers=2, layer_norm=True)
    x, mask = _inputs()
    x.requires_grad_(True)
    out = enc(x, mask)
    out[mask].pow(2).sum().backward()
    assert torch.isfinite(x.grad).all()
    # padding inputs get no gradient through real outputs; real inputs do
    assert (x.grad[~mask] == 0).all()
    assert (x.grad[mask].abs().sum(-1) > 0).all()
    for name, p in enc.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert enc.layers[0].query_att.grad.abs().sum() > 0 and enc.layers[0].key_att.grad.abs().sum() > 0

    # the whole output (padding positions too, all-padding row included) also backprops finitely
    layer = Fastformer(8, 2)
    x.grad = None
    layer(x, mask).sum().backward()
    assert torch.isfinite(x.grad).all()


def test_dropout_only_in_training():
    torch.manual_seed(0)
    layer = Fastformer(8, 2, dropout=0.5, attention_dropout=0.5)
    x, mask = _inputs()
    layer.eval()
    assert torch.equal(layer(x, mask), layer(x, mask))
    layer.train()
    assert not torch.equal(layer(x, mask), layer(x, mask))
    assert isinstance(layer.attention_dropout, nn.Dropout)


def test_global_key_with_multiplicity_equals_the_repeats_written_out():
    """Each distinct input kept once with its count gives the global key of the whole sequence."""
    torch.manual_seed(0)
    layer = Fastformer(12, 3).eval()
    distinct = torch.randn(2, 4, 12)  # [B, U, dim]
    count = torch.tensor([[1, 3, 2, 1], [2, 1, 1, 1]])  # [B, U]; user 1's last input is padding
    mask = torch.tensor([[True] * 4, [True, True, True, False]])
    split = (2, -1, 3, 4)
    with torch.no_grad():
        q, k, _ = layer.project(distinct)
        q, k = q * mask[..., None], k * mask[..., None]  # padding rows are zero, as the caller promises
        folded = layer.global_key(q.view(split), k.view(split), mask, padding_is_zero=True,
                                  multiplicity=count.masked_fill(~mask, 1))
        for user in range(2):
            repeats = torch.cat([distinct[user, i].expand(int(count[user, i]), 12) for i in range(4) if mask[user, i]])
            q_full, k_full, _ = layer.project(repeats[None])
            expected = layer.global_key(q_full.view(1, -1, 3, 4), k_full.view(1, -1, 3, 4), None)
            torch.testing.assert_close(folded[user], expected[0], rtol=1e-5, atol=1e-6)
