"""newsrank.seq.cells and newsrank.seq.model: each cell's step against the paper's equations
written out again here in numpy (float64, parameters read back from the module through the
documented fused layout), PLSTM's phases, the W_t1 <= 0 constraint, padding, extreme intervals,
and the next-item model."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from newsrank.seq.cells import CELLS, LSTMTCell, PhasedLSTMCell, TimeLSTM2Cell, TimeLSTM3Cell
from newsrank.seq.model import SeqModelConfig, TimeSequenceModel

B, E, H = 2, 3, 2


def sig(z):
    return 1.0 / (1.0 + np.exp(-z))


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().double().numpy()


def _params(cell) -> dict[str, np.ndarray]:
    """W_x<g> [E', H], b_<g> [H], W_h<g> [H, H] per gate, from the fused Linears, plus the
    peepholes and time weights (W_t1 = -softplus(v_t1) recomputed here)."""
    hs = cell.hidden_size
    wx, bx, wh = _np(cell.x_proj.weight), _np(cell.x_proj.bias), _np(cell.h_proj.weight)
    out = {}
    for k, g in enumerate(cell.gates):
        out[f"Wx{g}"] = wx[k * hs : (k + 1) * hs].T
        out[f"b{g}"] = bx[k * hs : (k + 1) * hs]
    for k, g in enumerate(cell.recurrent_gates):
        out[f"Wh{g}"] = wh[k * hs : (k + 1) * hs].T
    for name, p in cell.named_parameters():
        if "." not in name:
            out[name] = _np(p)
    if "v_t1" in out:
        out["w_t1"] = -np.log1p(np.exp(out["v_t1"]))
    return out


def _randomize(cell, seed=0):
    """Every parameter ~ N(0, 0.5) (so that no gate saturates and peepholes matter)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in cell.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * 0.5)
    return cell


def _inputs(seed=1):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(B, E, generator=gen, dtype=torch.float64)
    dt = torch.tensor([0.3, 2.5], dtype=torch.float64)
    t = torch.tensor([1.7, 6.2], dtype=torch.float64)
    h = torch.randn(B, H, generator=gen, dtype=torch.float64) * 0.5
    c = torch.randn(B, H, generator=gen, dtype=torch.float64)
    return x, dt, t, h, c


# ---------------------------------------------------------------- hand-written references (numpy)


def ref_lstm(P, x, h, c):
    i = sig(x @ P["Wxi"] + h @ P["Whi"] + P["w_ci"] * c + P["bi"])
    f = sig(x @ P["Wxf"] + h @ P["Whf"] + P["w_cf"] * c + P["bf"])
    c_new = f * c + i * np.tanh(x @ P["Wxc"] + h @ P["Whc"] + P["bc"])
    o = sig(x @ P["Wxo"] + h @ P["Who"] + P["w_co"] * c_new + P["bo"])
    return o * np.tanh(c_new), c_new


def ref_lstm_t(P, x, dt, h, c):
    return ref_lstm(P, np.concatenate([x, dt[:, None]], axis=1), h, c)


def ref_k(P, t, r_on, leak):
    tau = np.exp(P["log_tau"])
    phi = np.mod(t[:, None] - P["shift"], tau) / tau
    return np.where(phi < r_on / 2, 2 * phi / r_on, np.where(phi < r_on, 2 - 2 * phi / r_on, leak * phi))


def ref_plstm(P, x, t, h, c, r_on, leak):
    k = ref_k(P, t, r_on, leak)
    h_tilde, c_tilde = ref_lstm(P, x, h, c)
    return k * h_tilde + (1 - k) * h, k * c_tilde + (1 - k) * c


def ref_tlstm1(P, x, dt, h, c, inner=np.tanh):
    """inner: σ_Δt, the time term's squashing (tanh as the official code; sig for the first version)."""
    d = dt[:, None]
    i = sig(x @ P["Wxi"] + h @ P["Whi"] + P["w_ci"] * c + P["bi"])
    f = sig(x @ P["Wxf"] + h @ P["Whf"] + P["w_cf"] * c + P["bf"])
    T = sig(x @ P["Wxt"] + inner(d * P["w_tt"]) + P["bt"])
    c_new = f * c + i * T * np.tanh(x @ P["Wxc"] + h @ P["Whc"] + P["bc"])
    o = sig(x @ P["Wxo"] + d * P["w_to"] + h @ P["Who"] + P["w_co"] * c_new + P["bo"])
    return o * np.tanh(c_new), c_new


def _t1_t2(P, x, d, inner):
    T1 = sig(x @ P["Wxt1"] + inner(d * P["w_t1"]) + P["bt1"])
    T2 = sig(x @ P["Wxt2"] + inner(d * P["w_t2"]) + P["bt2"])
    return T1, T2


def ref_tlstm2(P, x, dt, h, c, inner=np.tanh):
    d = dt[:, None]
    i = sig(x @ P["Wxi"] + h @ P["Whi"] + P["w_ci"] * c + P["bi"])
    f = sig(x @ P["Wxf"] + h @ P["Whf"] + P["w_cf"] * c + P["bf"])
    T1, T2 = _t1_t2(P, x, d, inner)
    g = np.tanh(x @ P["Wxc"] + h @ P["Whc"] + P["bc"])
    c_tilde = f * c + i * T1 * g
    c_new = f * c + i * T2 * g
    o = sig(x @ P["Wxo"] + d * P["w_to"] + h @ P["Who"] + P["w_co"] * c_tilde + P["bo"])
    return o * np.tanh(c_tilde), c_new


def ref_tlstm3(P, x, dt, h, c, inner=np.tanh):
    d = dt[:, None]
    i = sig(x @ P["Wxi"] + h @ P["Whi"] + P["w_ci"] * c + P["bi"])
    T1, T2 = _t1_t2(P, x, d, inner)
    g = np.tanh(x @ P["Wxc"] + h @ P["Whc"] + P["bc"])
    c_tilde = (1 - i * T1) * c + i * T1 * g
    c_new = (1 - i) * c + i * T2 * g
    o = sig(x @ P["Wxo"] + d * P["w_to"] + h @ P["Who"] + P["w_co"] * c_tilde + P["bo"])
    return o * np.tanh(c_tilde), c_new


@pytest.mark.parametrize("train", [False, True])
@pytest.mark.parametrize("name", list(CELLS))
def test_one_step_matches_hand_computation(name, train):
    cell = _randomize(CELLS[name](E, H).double())
    cell.train(train)
    x, dt, t, h, c = _inputs()
    h_out, (h_state, c_state) = cell(x, dt, t, (h, c))
    P, xs, ds, ts, hs, cs = _params(cell), *(_np(v) for v in (x, dt, t, h, c))
    if name == "lstm":
        want_h, want_c = ref_lstm(P, xs, hs, cs)
    elif name == "lstm_t":
        want_h, want_c = ref_lstm_t(P, xs, ds, hs, cs)
    elif name == "plstm":
        want_h, want_c = ref_plstm(P, xs, ts, hs, cs, r_on=0.05, leak=1e-3)  # leak_at_eval: on by default
    else:
        want_h, want_c = {"tlstm1": ref_tlstm1, "tlstm2": ref_tlstm2, "tlstm3": ref_tlstm3}[name](P, xs, ds, hs, cs)
    np.testing.assert_allclose(_np(h_out), want_h, atol=1e-6, rtol=0)
    np.testing.assert_allclose(_np(h_state), want_h, atol=1e-6, rtol=0)
    np.testing.assert_allclose(_np(c_state), want_c, atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", ["tlstm1", "tlstm2", "tlstm3"])
def test_time_gate_inner_squashing_tanh_by_default_sigmoid_for_old_runs(name):
    """σ_Δt is tanh by default (the official code's TimeGate), sigmoid on request (the first
    version's, which old checkpoints get); the two differ, and at Δt = 0 tanh's time term is 0."""
    x, dt, t, h, c = _inputs()
    refs = {"tlstm1": ref_tlstm1, "tlstm2": ref_tlstm2, "tlstm3": ref_tlstm3}
    assert CELLS[name](E, H).inner == "tanh"
    outputs = {}
    for inner, fn in (("tanh", np.tanh), ("sigmoid", sig)):
        cell = _randomize(CELLS[name](E, H, inner=inner).double())
        h_out, (_, c_state) = cell(x, dt, t, (h, c))
        want_h, want_c = refs[name](_params(cell), *(_np(v) for v in (x, dt, h, c)), inner=fn)
        np.testing.assert_allclose(_np(h_out), want_h, atol=1e-6, rtol=0)
        np.testing.assert_allclose(_np(c_state), want_c, atol=1e-6, rtol=0)
        outputs[inner] = _np(h_out)
    assert not np.allclose(outputs["tanh"], outputs["sigmoid"])
    cell = _randomize(CELLS[name](E, H).double())
    p = cell.project_inputs(x, torch.zeros(B, dtype=torch.float64), t)
    gates = p[..., cell.recurrent_width :]  # the T's at Δt = 0: σ(x W_x + 0 + b)
    P = _params(cell)
    for k, g in enumerate(cell.time_gate_names):
        np.testing.assert_allclose(_np(gates[..., k * H : (k + 1) * H]), sig(_np(x) @ P[f"Wx{g}"] + P[f"b{g}"]), atol=1e-12)
    with pytest.raises(ValueError, match="inner"):
        CELLS[name](E, H, inner="relu")
    with pytest.raises(ValueError, match="time_gate_inner"):
        SeqModelConfig(cell=name, time_gate_inner="relu")
    model = TimeSequenceModel(SeqModelConfig(cell=name, time_gate_inner="sigmoid", embedding_dim=E, hidden=H), 5)
    assert model.cell.inner == "sigmoid"


def test_lstm_t_differs_from_lstm_only_through_dt():
    cell = _randomize(LSTMTCell(E, H).double())
    x, dt, t, h, c = _inputs()
    a, _ = cell(x, dt, t, (h, c))
    b, _ = cell(x, dt + 1.0, t, (h, c))
    assert not torch.allclose(a, b)  # Δt is an input feature
    assert cell.x_proj.in_features == E + 1


def test_none_state_is_zeros():
    cell = _randomize(TimeLSTM2Cell(E, H).double())
    x, dt, t, _, _ = _inputs()
    zeros = torch.zeros(B, H, dtype=torch.float64)
    a, _ = cell(x, dt, t)
    b, _ = cell(x, dt, t, (zeros, zeros))
    torch.testing.assert_close(a, b)


# ---------------------------------------------------------------- PLSTM


def _plstm_fixed(r_on=0.2, leak=0.01, leak_at_eval=False):
    """Period 10 and shift 0 for unit 0; period 10, shift 2.5 for unit 1."""
    cell = PhasedLSTMCell(E, H, r_on=r_on, leak=leak, leak_at_eval=leak_at_eval).double()
    with torch.no_grad():
        cell.log_tau.fill_(math.log(10.0))
        cell.shift.copy_(torch.tensor([0.0, 2.5]))
    return cell


def test_plstm_openness_regimes():
    cell = _plstm_fixed(r_on=0.2, leak=0.01)
    t = torch.tensor([0.6, 1.3, 5.0, 0.0], dtype=torch.float64)  # unit 0: φ = 0.06, 0.13, 0.5, 0
    cell.train()
    k = cell.openness(t)[:, 0]
    expected = [2 * 0.06 / 0.2, 2 - 2 * 0.13 / 0.2, 0.01 * 0.5, 0.0]  # opening, closing, closed (leak)
    torch.testing.assert_close(k, torch.tensor(expected, dtype=torch.float64))
    cell.eval()
    k = cell.openness(t)[:, 0]
    expected[2] = 0.0  # no leak in eval
    torch.testing.assert_close(k, torch.tensor(expected, dtype=torch.float64))
    # unit 1 (shift 2.5): t = 0 gives (−2.5 mod 10) / 10 = 0.75, closed; t = 3.1 gives φ = 0.06
    cell.train()
    k1 = cell.openness(torch.tensor([0.0, 3.1], dtype=torch.float64))[:, 1]
    torch.testing.assert_close(k1, torch.tensor([0.01 * 0.75, 0.6], dtype=torch.float64))


def test_plstm_closed_unit_keeps_its_state_in_eval_and_leaks_in_train():
    cell = _randomize(_plstm_fixed(r_on=0.2, leak=0.01))
    with torch.no_grad():
        cell.log_tau.fill_(math.log(10.0))
        cell.shift.zero_()
    x, dt, _, h, c = _inputs()
    t = torch.full((B,), 5.0, dtype=torch.float64)  # φ = 0.5: both units closed
    cell.eval()
    h_out, (_, c_out) = cell(x, dt, t, (h, c))
    torch.testing.assert_close(h_out, h)
    torch.testing.assert_close(c_out, c)
    cell.train()
    h_out, _ = cell(x, dt, t, (h, c))
    assert not torch.allclose(h_out, h)  # k = 0.01 * 0.5: a small update
    torch.testing.assert_close(h_out, h, atol=0.05, rtol=0)


def test_plstm_candidate_readout_outputs_the_event_response_and_carries_the_gated_state():
    """readout=candidate: the step outputs h̃ (the peephole LSTM's step from the carried state),
    also for a closed unit; the state carried on is the gated (h, c), as with readout=gated."""
    x, dt, _, h, c = _inputs()
    t = torch.tensor([5.0, 0.6], dtype=torch.float64)  # unit 0 (shift 0): closed at 5.0, opening at 0.6
    gated = _randomize(_plstm_fixed(r_on=0.2, leak=0.01))
    candidate = PhasedLSTMCell(E, H, r_on=0.2, leak=0.01, leak_at_eval=False, readout="candidate").double()
    candidate.load_state_dict(gated.state_dict())
    gated.eval(), candidate.eval()
    out_g, (h_g, c_g) = gated(x, dt, t, (h, c))
    out_c, (h_c, c_c) = candidate(x, dt, t, (h, c))
    h_tilde, _ = ref_lstm(_params(candidate), _np(x), _np(h), _np(c))
    np.testing.assert_allclose(_np(out_c), h_tilde, atol=1e-10, rtol=0)
    torch.testing.assert_close(h_c, h_g)  # the same carried state
    torch.testing.assert_close(c_c, c_g)
    torch.testing.assert_close(out_g, h_g)  # gated: the output is the carried h
    torch.testing.assert_close(out_g[0, 0], h[0, 0])  # closed unit: gated output = what it held
    assert not torch.isclose(out_c[0, 0], h[0, 0])  # candidate: it still answers the event
    # the model's default is candidate (the cell's own default, Neil et al.'s, is gated); old run
    # headers, written before the option, load as gated and old Time-LSTM ones with sigmoid
    assert SeqModelConfig().plstm_readout == "candidate" and PhasedLSTMCell(E, H).readout == "gated"
    model = TimeSequenceModel(SeqModelConfig(cell="plstm", plstm_period_min=1.0, plstm_period_max=2.0), 5)
    assert model.cell.readout == "candidate"
    from newsrank.seq.checkpoint import config_from_header
    old = config_from_header({"config": {"model": {"cell": "plstm"}}}, "old/checkpoint.json")
    assert (old.model.plstm_readout, old.model.time_gate_inner) == ("gated", "sigmoid")
    with pytest.raises(ValueError, match="readout"):
        PhasedLSTMCell(E, H, readout="open")
    with pytest.raises(ValueError, match="plstm_readout"):
        SeqModelConfig(cell="plstm", plstm_readout="open")


def test_plstm_init_ranges_and_config():
    torch.manual_seed(0)
    cell = PhasedLSTMCell(E, 64, period_range=(1.0, 20.0))
    tau = cell.log_tau.exp()
    assert (tau >= 1.0 - 1e-6).all() and (tau <= 20.0 + 1e-5).all()
    assert (cell.shift >= 0).all() and (cell.shift <= 20.0).all()  # U(0, the longest period)
    assert (cell.gate_bias("f") == 2.0).all()  # the official PLSTM's forget bias
    with pytest.raises(ValueError, match="r_on"):
        PhasedLSTMCell(E, H, r_on=0.0)


# ---------------------------------------------------------------- Time-LSTM 2 / 3


@pytest.mark.parametrize("optimizer", [torch.optim.Adam, torch.optim.Adagrad])
@pytest.mark.parametrize("cls", [TimeLSTM2Cell, TimeLSTM3Cell])
def test_w_t1_stays_nonpositive_under_pressure(cls, optimizer):
    torch.manual_seed(0)
    cell = cls(E, 4)
    assert (cell.time_weight("t1") <= 0).all()
    before = cell.time_weight("t1").detach().clone()
    opt = optimizer(cell.parameters(), lr=0.5)
    x = torch.randn(16, E)
    dt = torch.full((16,), 8.0)  # a large interval: W_t1 < 0 makes σ(Δt W_t1), hence T1, small
    t = torch.zeros(16)
    width = cell.recurrent_width
    for _ in range(20):
        T1 = cell.project_inputs(x, dt, t)[:, width : width + 4]  # [16, H]
        loss = -T1.mean()  # pushes W_t1 upwards
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = cell.time_weight("t1").detach()
    assert (after <= 0).all()
    assert (after > before).all()  # the optimizer did push it up, towards 0


def test_tlstm2_output_uses_t1_and_state_uses_t2():
    """T1 ≈ 1, T2 ≈ 0 from zero state: c̃ carries the input (h ≠ 0) but the carried c ≈ 0. If the
    two were swapped, h would be ≈ 0 and c would not. Then the reverse setting."""
    cell = _randomize(TimeLSTM2Cell(E, H).double())
    x, dt, t, _, _ = _inputs()
    zeros = torch.zeros(B, H, dtype=torch.float64)
    with torch.no_grad():
        cell.gate_bias("t1").fill_(30.0)
        cell.gate_bias("t2").fill_(-30.0)
    h, (_, c) = cell(x, dt, t, (zeros, zeros))
    assert c.abs().max() < 1e-9
    assert h.abs().min() > 1e-3
    with torch.no_grad():
        cell.gate_bias("t1").fill_(-30.0)
        cell.gate_bias("t2").fill_(30.0)
    h, (_, c) = cell(x, dt, t, (zeros, zeros))
    assert h.abs().max() < 1e-9
    assert c.abs().min() > 1e-3


# ---------------------------------------------------------------- model


def _batch(seed=0, b=3, length=6, num_items=9):
    gen = torch.Generator().manual_seed(seed)
    items = torch.randint(1, num_items, (b, length), generator=gen)
    delta_next = torch.rand(b, length, generator=gen) * 5
    since_first = torch.cumsum(torch.rand(b, length, generator=gen) * 3, dim=1)
    mask = torch.ones(b, length, dtype=torch.bool)
    return items, delta_next, since_first, mask


def _model(name, num_items=9, seed=0, **kw):
    """PLSTM here reads since_first (its scaled clock), like every other cell reads its time
    inputs from the same two tensors; its linear clock has its own tests (test_seq_timelstm.py)."""
    torch.manual_seed(seed)
    if name == "plstm":
        kw = {"plstm_time": "scaled", "plstm_period_min": 1.0, "plstm_period_max": 20.0, **kw}
    config = SeqModelConfig(cell=name, embedding_dim=5, hidden=4, **kw)
    return TimeSequenceModel(config, num_items)


@pytest.mark.parametrize("name", list(CELLS))
def test_padding_does_not_change_real_steps(name):
    model = _model(name).eval()
    items, dn, sf, mask = _batch()
    n = 3  # row 0 has 3 real steps, then padding with junk times
    items[0, n:] = 0
    dn[0, n:] = 123.0
    sf[0, n:] = 77.0
    mask[0, n:] = False
    with torch.no_grad():
        hidden = model(items, dn, sf, mask)  # [3, 6, H]
        alone = model(items[:1, :n], dn[:1, :n], sf[:1, :n], mask[:1, :n])  # [1, 3, H]
        # left padding as well: the state is held, so real steps see the same (zero) start
        left = model(
            torch.cat([items[:1, n:], items[:1, :n]], 1),
            torch.cat([dn[:1, n:], dn[:1, :n]], 1),
            torch.cat([sf[:1, n:], sf[:1, :n]], 1),
            torch.cat([mask[:1, n:], mask[:1, :n]], 1),
        )
    torch.testing.assert_close(hidden[0, :n], alone[0], atol=1e-6, rtol=0)
    torch.testing.assert_close(left[0, -n:], alone[0], atol=1e-6, rtol=0)
    assert (hidden[0, n:] == 0).all() and (left[0, : 6 - n] == 0).all()
    torch.testing.assert_close(model.last_hidden(hidden, mask)[0], alone[0, -1])


@pytest.mark.parametrize("name", list(CELLS))
def test_no_nan_with_zero_and_huge_intervals(name):
    model = _model(name).train()
    items, _, _, mask = _batch(length=4)
    mask[1, 2:] = False
    for value in (0.0, 1e8):
        dn = torch.full(items.shape, value)
        sf = torch.arange(4.0).expand_as(dn) * value  # since_first: 0, v, 2v, 3v
        model.zero_grad()
        hidden = model(items, dn, sf, mask)
        logits = model.logits(hidden)
        loss = F.cross_entropy(logits[:, :-1].reshape(-1, 9), items[:, 1:].reshape(-1))
        loss.backward()
        assert torch.isfinite(hidden).all(), value
        assert torch.isfinite(loss), value
        for pname, p in model.named_parameters():
            assert p.grad is None or torch.isfinite(p.grad).all(), (value, pname)


def test_model_shapes_logits_and_last_hidden():
    model = _model("tlstm3").eval()
    items, dn, sf, mask = _batch(b=4, length=5)
    lengths = [5, 2, 1, 0]
    for row, n in enumerate(lengths):
        mask[row, n:] = False
        items[row, n:] = 0
    hidden = model(items, dn, sf, mask)
    assert hidden.shape == (4, 5, 4)
    logits = model.logits(hidden)
    assert logits.shape == (4, 5, 9)
    assert torch.isneginf(logits[..., 0]).all()
    assert torch.isfinite(logits[..., 1:]).all()
    last = model.last_hidden(hidden, mask)
    for row, n in enumerate(lengths):
        want = hidden[row, n - 1] if n else torch.zeros(4)
        torch.testing.assert_close(last[row], want)
    assert not torch.equal(last[0], last[1])
    # a hand-made hidden tensor: the picked positions are exactly the last True ones
    fake = torch.arange(4 * 5 * 2, dtype=torch.float32).view(4, 5, 2)
    picked = TimeSequenceModel.last_hidden(fake, mask)
    torch.testing.assert_close(picked[:3], fake[[0, 1, 2], [4, 1, 0]])
    assert (picked[3] == 0).all()


def test_config_validation():
    with pytest.raises(ValueError, match="cell"):
        SeqModelConfig(cell="gru")
    with pytest.raises(ValueError, match="hidden"):
        SeqModelConfig(hidden=0)
    with pytest.raises(ValueError, match="dropout"):
        SeqModelConfig(dropout=1.0)
    with pytest.raises(ValueError, match="plstm_r_on"):
        SeqModelConfig(plstm_r_on=1.5)
    with pytest.raises(ValueError, match="plstm_period_max"):
        SeqModelConfig(plstm_period_min=5.0, plstm_period_max=2.0)
    with pytest.raises(ValueError, match="both set or both null"):
        SeqModelConfig(plstm_period_min=5.0)
    with pytest.raises(ValueError, match="plstm_gap_quantiles"):
        SeqModelConfig(plstm_gap_quantiles=[0.9, 0.1])


@pytest.mark.parametrize("name", list(CELLS))
def test_model_overfits_tiny_next_item_data(name):
    """Six users, deterministic next items (each user walks the items with its own stride): the
    next-item loss over all real steps must drop a lot in 100 Adam steps. PLSTM gets 64 units: with
    its default r_on = 0.05 only ~1 of 16 units is open at a step, too few to memorise quickly."""
    num_items, length = 13, 7
    strides = torch.tensor([1, 2, 3, 5, 1, 2])
    starts = torch.tensor([0, 4, 7, 2, 9, 11])
    steps = torch.arange(length)
    items = (starts[:, None] + strides[:, None] * steps) % (num_items - 1) + 1  # [6, 7], in 1..12
    mask = torch.ones_like(items, dtype=torch.bool)
    mask[4, 5:] = False  # some padding, to exercise ignore_index
    items = items.masked_fill(~mask, 0)
    gen = torch.Generator().manual_seed(0)
    delta_next = torch.rand(items.shape, generator=gen) * 4
    since_first = torch.cumsum(delta_next, dim=1) - delta_next
    targets = torch.cat([items[:, 1:], torch.zeros(6, 1, dtype=torch.long)], dim=1)  # 0 = nothing to predict

    seconds = since_first.double() * 60  # PLSTM's linear clock: one unit of time is a minute here

    torch.manual_seed(0)
    hidden = 64 if name == "plstm" else 16
    periods = {"plstm_period_min": 60.0, "plstm_period_max": 600.0} if name == "plstm" else {}
    model = TimeSequenceModel(SeqModelConfig(cell=name, embedding_dim=16, hidden=hidden, **periods), num_items)
    opt = torch.optim.Adam(model.parameters(), lr=0.03)
    losses = []
    for _ in range(100):
        logits = model.logits(model(items, delta_next, since_first, mask, seconds))  # [6, 7, V]
        loss = F.cross_entropy(logits.reshape(-1, num_items), targets.reshape(-1), ignore_index=0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < 0.2 * losses[0], (losses[0], losses[-1])
