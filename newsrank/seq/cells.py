"""Recurrent cells of the Time-LSTM paper (Zhu et al., "What to Do Next: Modeling User Behaviors
by Time-LSTM", IJCAI 2017): its LSTM baseline, LSTM_T, Phased LSTM (Neil et al., NIPS 2016) and
Time-LSTM 1/2/3.

Every cell is an LSTM with *peepholes* (diagonal vectors ``w_ci``, ``w_cf``, ``w_co``), as in the
paper, and runs ONE step::

    h, state = cell(x, dt, t, state)

* ``x`` [B, E]: the embedding of the current item x_m;
* ``dt`` [B]: the interval Δt_m = t_{m+1} − t_m, i.e. the (scaled) ``delta_next`` of the step: how
  long after x_m the action being predicted happens (the Time-LSTM cells' time input);
* ``t`` [B]: the time of the step since the user's first event (PLSTM's time input, as for the
  paper's PLSTM baseline): raw seconds (float64) on PLSTM's linear clock, else the scaled
  ``since_first``;
* ``state``: ``(h, c)``, each [B, H] (None: zeros). ``h`` is also the step's output (PLSTM with
  ``readout=candidate``, the next-item model's default, outputs its candidate h̃ instead).

Row vectors such as W_tt, W_to multiply the *scalar* Δt, so they are stored as [1, H].

Speed: the recurrence runs in a Python loop, so each cell splits its work in two.
:meth:`TimeCell.project_inputs` computes everything that does not depend on the state — the
input projections of all gates (one fused Linear), the Δt terms, the time gates T, T1, T2 (which
depend only on x and Δt) and PLSTM's openness k (which depends only on t) — for a whole
[B, L] sequence at once; :meth:`TimeCell.step` then does the recurrent part only (one fused Linear
on h plus elementwise gate arithmetic). ``forward`` is ``step(project_inputs(...))`` for one step.

Fused layout: ``x_proj`` (a Linear with bias, the biases b_* of all gates) outputs one H-block per
name in ``cell.gates``, in that order; ``h_proj`` (no bias) outputs one block per name in
``cell.recurrent_gates`` (the gates with an h W_h term, always the first ones of ``gates``).
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

State = tuple[torch.Tensor, torch.Tensor]  # (h, c), each [B, H]


def _inverse_softplus(y: torch.Tensor) -> torch.Tensor:
    """v with softplus(v) = y, for y > 0: v = log(expm1(y))."""
    return torch.log(torch.expm1(y))


class TimeCell(nn.Module):
    """Shared machinery: fused input/recurrent projections, peepholes, the initial state, and the
    split into :meth:`project_inputs` (state-free, vectorised over steps) and :meth:`step`.

    Subclasses set ``gates`` / ``recurrent_gates`` / ``peepholes``, implement :meth:`step`, and
    override :meth:`project_inputs` when they have state-free time terms (Δt, T gates, k);
    their own parameters are created in :meth:`_extra_parameters` and filled by
    :meth:`reset_parameters`.
    """

    #: one H-block of ``x_proj`` per name, in this order (the biases b_* live there too)
    gates: ClassVar[tuple[str, ...]] = ("i", "f", "c", "o")
    #: the leading gates that also get h W_h (blocks of ``h_proj``)
    recurrent_gates: ClassVar[tuple[str, ...]] = ("i", "f", "c", "o")
    #: diagonal peephole vectors w_c<gate> created for these gates
    peepholes: ClassVar[tuple[str, ...]] = ("i", "f", "o")
    #: extra scalar features appended to x before ``x_proj`` (LSTM_T: Δt)
    extra_inputs: ClassVar[int] = 0

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__()
        assert self.gates[: len(self.recurrent_gates)] == self.recurrent_gates, "recurrent gates come first"
        self.input_size, self.hidden_size = input_size, hidden_size
        self.x_proj = nn.Linear(input_size + self.extra_inputs, len(self.gates) * hidden_size)
        self.h_proj = nn.Linear(hidden_size, len(self.recurrent_gates) * hidden_size, bias=False)
        for gate in self.peepholes:
            self.register_parameter(f"w_c{gate}", nn.Parameter(torch.empty(hidden_size)))
        self._extra_parameters()
        self.reset_parameters()

    def _extra_parameters(self) -> None:
        """Create a subclass's own parameters (uninitialised; :meth:`reset_parameters` fills them)."""

    def reset_parameters(self) -> None:
        """Default Linear init for the projections; peepholes U(±1/√H) like the recurrent
        weights; forget-gate bias 1 (a common LSTM choice, so that early training remembers)."""
        self.x_proj.reset_parameters()
        self.h_proj.reset_parameters()
        bound = 1.0 / math.sqrt(self.hidden_size)
        for gate in self.peepholes:
            nn.init.uniform_(getattr(self, f"w_c{gate}"), -bound, bound)
        if "f" in self.gates:
            with torch.no_grad():
                self.gate_bias("f").fill_(1.0)

    # -- helpers -------------------------------------------------------------------------------

    def gate_bias(self, gate: str) -> torch.Tensor:
        """View of the bias b_<gate> inside ``x_proj.bias`` ([H])."""
        k, hs = self.gates.index(gate), self.hidden_size
        return self.x_proj.bias[k * hs : (k + 1) * hs]

    @property
    def recurrent_width(self) -> int:
        """Width of the leading part of :meth:`project_inputs`' output that ``h_proj`` adds to."""
        return len(self.recurrent_gates) * self.hidden_size

    def clock_parameters(self) -> list[nn.Parameter]:
        """Parameters of a clock read in raw time (PLSTM's periods, shifts, r_on): their gradients
        scale with the time elapsed and are clipped apart from the rest (see the trainer's
        :func:`newsrank.seq.train.clip_gradients`). None for the other cells."""
        return []

    def initial_state(self, batch: int, device=None, dtype=None) -> State:
        zeros = torch.zeros(batch, self.hidden_size, device=device, dtype=dtype)
        return zeros, zeros

    # -- the two halves of a step -------------------------------------------------------------

    def project_inputs(self, x: torch.Tensor, dt: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The state-free part of a step for any leading shape: x [..., E], dt / t [...] ->
        [..., P] (P = len(gates) * H, plus H for PLSTM's k). Plain LSTM: x W_x + b."""
        return self.x_proj(x)  # [..., G * H]

    def step(self, p: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """The recurrent part: p [B, P] from :meth:`project_inputs`, state (h, c) -> (h, state)."""
        raise NotImplementedError

    def forward(
        self, x: torch.Tensor, dt: torch.Tensor, t: torch.Tensor, state: State | None = None
    ) -> tuple[torch.Tensor, State]:
        if state is None:
            state = self.initial_state(x.shape[0], x.device, x.dtype)
        return self.step(self.project_inputs(x, dt, t), state)

    def _recurrent(self, p: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Pre-activations x W_x + h W_h + b of the recurrent gates, one [B, H] per gate."""
        z = p[..., : self.recurrent_width] + self.h_proj(h)  # [B, n_rec * H]
        return z.chunk(len(self.recurrent_gates), dim=-1)

    def _peephole_lstm(self, p: torch.Tensor, h: torch.Tensor, c: torch.Tensor) -> State:
        """The paper's peephole LSTM step, returning (h̃, c̃)::

        i = σ(x W_xi + h W_hi + w_ci ⊙ c_prev + b_i)
        f = σ(x W_xf + h W_hf + w_cf ⊙ c_prev + b_f)
        c̃ = f ⊙ c_prev + i ⊙ tanh(x W_xc + h W_hc + b_c)
        o = σ(x W_xo + h W_ho + w_co ⊙ c̃ + b_o)
        h̃ = o ⊙ tanh(c̃)
        """
        zi, zf, zc, zo = self._recurrent(p, h)  # each [B, H]
        i = torch.sigmoid(zi + self.w_ci * c)
        f = torch.sigmoid(zf + self.w_cf * c)
        c_new = f * c + i * torch.tanh(zc)  # [B, H]
        o = torch.sigmoid(zo + self.w_co * c_new)
        return o * torch.tanh(c_new), c_new


class LSTMCell(TimeCell):
    """The paper's LSTM baseline, with peepholes (no time input)::

        i = σ(x W_xi + h_prev W_hi + w_ci ⊙ c_prev + b_i)
        f = σ(x W_xf + h_prev W_hf + w_cf ⊙ c_prev + b_f)
        c = f ⊙ c_prev + i ⊙ tanh(x W_xc + h_prev W_hc + b_c)
        o = σ(x W_xo + h_prev W_ho + w_co ⊙ c + b_o)
        h = o ⊙ tanh(c)
    """

    def step(self, p: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        h, c = self._peephole_lstm(p, *state)
        return h, (h, c)


class LSTMTCell(LSTMCell):
    """LSTM_T: the peephole LSTM of :class:`LSTMCell` with Δt appended to the input as one more
    feature, x' = [x; Δt] (so ``x_proj`` has E + 1 inputs; its last column weighs Δt)."""

    extra_inputs = 1

    def project_inputs(self, x: torch.Tensor, dt: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        x = torch.cat([x, dt.unsqueeze(-1).to(x.dtype)], dim=-1)  # [..., E + 1]
        return self.x_proj(x)  # [..., 4H]


#: what PLSTM's step outputs: the gated h (Neil et al.) or the candidate h̃ (see PhasedLSTMCell)
PLSTM_READOUTS = ("gated", "candidate")


class PhasedLSTMCell(LSTMCell):
    """Phased LSTM (Neil et al., NIPS 2016) on the peephole LSTM, driven by a clock t: the time of
    the current event since the user's first event, as the Time-LSTM paper's PLSTM baseline. Per
    hidden unit j: a learned period τ_j > 0 (stored as log τ), a learned shift s_j, and an open
    ratio r_on (fixed, or learned per unit with ``learn_r_on``)::

        φ = ((t − s) mod τ) / τ                      (phase in [0, 1))
        k = 2φ / r_on          if φ < r_on / 2       (opening)
            2 − 2φ / r_on      if r_on / 2 ≤ φ < r_on  (closing)
            α φ                otherwise             (closed; leak α)
        h̃, c̃ = the peephole LSTM step of LSTMCell (from h_prev, c_prev)
        c = k ⊙ c̃ + (1 − k) ⊙ c_prev
        h = k ⊙ h̃ + (1 − k) ⊙ h_prev

    The clock must be *linear* in time for the phase to mean anything: t is raw seconds
    (``model.plstm_time=linear``, the default; the official Time-LSTM code feeds raw seconds too)
    and ``period_range`` is in seconds, chosen from the training log's gaps by the trainer
    (:func:`newsrank.seq.train.resolve_time_scale`). On a log1p clock (``plstm_time=scaled``, the
    first version) one step late in a history moves t by ~5e-4 while a window is 0.05-1 wide, so
    most units never open in a whole prefix.

    Init: log τ ~ U(log τ_min, log τ_max) (log-uniform, as Neil et al.), shift s ~ U(0, τ_max)
    (the official code: U(0, 1000) s against periods of 10-100 s), forget-gate bias 2 (the official
    PLSTM's). The phase is computed in float64: t reaches 1e8 s, where float32 steps by 8 s.

    Leak: Neil et al. switch it off at test time; the official Time-LSTM code keeps it on (its
    prediction function is built without ``deterministic``). ``leak_at_eval`` (default True, the
    official code's) picks; with it on, training and evaluation compute the same function.

    Readout (what the step *outputs*, i.e. what scores the next item; the carried state is the
    gated (h, c) either way): ``gated`` (Neil et al. and the official code) outputs the gated h, so
    a unit closed at this event outputs what it held before it, and on average only r_on of the
    units (exactly: the share whose phase is < r_on, whatever the periods and shifts, since the
    shifts are uniform) react to the event just read; ``candidate`` outputs h̃, the peephole LSTM's
    response to this event from the carried state, as Time-LSTM 2/3 output c̃ (this step) while
    carrying c (later steps): the phase gates what is *remembered*, not what the event says now.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        r_on: float = 0.05,
        leak: float = 1e-3,
        period_range: tuple[float, float] = (1.0, 20.0),
        learn_r_on: bool = False,
        leak_at_eval: bool = True,
        readout: str = "gated",
    ):
        if readout not in PLSTM_READOUTS:
            raise ValueError(f"readout must be one of {', '.join(PLSTM_READOUTS)}, got {readout!r}")
        if not 0.0 < r_on <= 1.0:
            raise ValueError(f"r_on must be in (0, 1], got {r_on}")
        if leak < 0:
            raise ValueError(f"leak must be >= 0, got {leak}")
        if not 0.0 < period_range[0] <= period_range[1]:
            raise ValueError(f"period_range must satisfy 0 < min <= max, got {period_range}")
        # plain attributes, set first: reset_parameters (run by TimeCell.__init__) reads them
        self.r_on_init, self.leak = float(r_on), float(leak)
        self.learn_r_on, self.leak_at_eval = bool(learn_r_on), bool(leak_at_eval)
        self.readout = readout
        self.period_range = (float(period_range[0]), float(period_range[1]))
        super().__init__(input_size, hidden_size)

    def _extra_parameters(self) -> None:
        self.log_tau = nn.Parameter(torch.empty(self.hidden_size))  # [H] log τ
        self.shift = nn.Parameter(torch.empty(self.hidden_size))  # [H] s
        if self.learn_r_on:
            # r_on = σ(logit) per unit: always in (0, 1) whatever the optimizer does
            self.r_on_logit = nn.Parameter(torch.empty(self.hidden_size))  # [H]

    def reset_parameters(self) -> None:
        super().reset_parameters()
        low, high = self.period_range
        with torch.no_grad():
            self.log_tau.uniform_(math.log(low), math.log(high))
            self.shift.uniform_(0.0, high)
            self.gate_bias("f").fill_(2.0)
            if self.learn_r_on:
                r = min(self.r_on_init, 1.0 - 1e-4)
                self.r_on_logit.fill_(math.log(r / (1.0 - r)))

    def clock_parameters(self) -> list[nn.Parameter]:
        """log τ, s (and r_on's logit when learned). ∂φ/∂log τ = −(t − s)/τ, the number of periods
        elapsed: on MovieLens (t up to years, τ from 3 s) the gradient of log τ is ~1e5 against
        ~0.03 for every other parameter."""
        return [self.log_tau, self.shift] + ([self.r_on_logit] if self.learn_r_on else [])

    @property
    def r_on(self) -> torch.Tensor:
        """The open ratio, [H] (learned) or a 0-d tensor (fixed)."""
        if self.learn_r_on:
            return torch.sigmoid(self.r_on_logit)
        return self.log_tau.new_tensor(self.r_on_init)

    def openness(self, t: torch.Tensor) -> torch.Tensor:
        """k for times t [...] -> [..., H] in the dtype of the weights (the leak is used in
        training mode, and in eval mode when ``leak_at_eval``)."""
        tau = self.log_tau.double().exp()  # [H]
        phase = torch.remainder(t.double().unsqueeze(-1) - self.shift.double(), tau) / tau  # [..., H] in [0, 1)
        phase = phase.to(self.log_tau.dtype)
        r_on = self.r_on
        ramp = 2.0 * phase / r_on
        leak = self.leak if (self.training or self.leak_at_eval) else 0.0
        closed = leak * phase
        return torch.where(phase < 0.5 * r_on, ramp, torch.where(phase < r_on, 2.0 - ramp, closed))

    def project_inputs(self, x: torch.Tensor, dt: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        k = self.openness(t).to(x.dtype)  # [..., H]
        return torch.cat([self.x_proj(x), k], dim=-1)  # [..., 4H + H]

    def step(self, p: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        h_prev, c_prev = state
        k = p[..., self.recurrent_width :]  # [B, H]
        h_tilde, c_tilde = self._peephole_lstm(p, h_prev, c_prev)
        c = k * c_tilde + (1.0 - k) * c_prev
        h = k * h_tilde + (1.0 - k) * h_prev
        out = h_tilde if self.readout == "candidate" else h  # [B, H] what this step says (see Readout)
        return out, (h, c)


#: the inner squashing σ_Δt of the time gates: tanh (the official code's) or sigmoid (the first version's)
TIME_GATE_INNER = ("tanh", "sigmoid")


class _TimeGatedCell(TimeCell):
    """Base of Time-LSTM 1/2/3: the time gates ("t", "t1", "t2": the gates after the recurrent
    ones) and the Δt term of the output gate, all computed in :meth:`project_inputs`::

        T_k = σ(x W_xk + σ_Δt(Δt W_tk) + b_k)    (no h term: they depend on x and Δt only)
        o-gate pre-activation += Δt W_to

    σ_Δt, the paper's inner squashing of the time term, is ``inner``: ``tanh`` (default) as in the
    official code (``tgate.TimeGate(nonlinearity_inside=tanh)``), or ``sigmoid`` (this package's
    first version, kept so that its checkpoints score as they did). tanh is centred: at Δt = 0 the
    time term is 0 whatever W_tk, and it moves the gate's pre-activation over (−1, 1) instead of
    sigmoid's (0, 1), so Δt can open or shut a gate twice as far; with W_t1 ≤ 0 and Δt ≥ 0,
    tanh(Δt W_t1) ∈ (−1, 0] (sigmoid: (0, 0.5]).

    W_tk and W_to are [1, H] row vectors (parameters ``w_tt`` for gate "t", ``w_t2``, ``w_to``).
    Time gates named in ``nonpositive`` have W_tk = −softplus(v_tk) with v_tk (``v_t1``) free, so
    W_tk ≤ 0 for every value of the parameter; :meth:`time_weight` gives the effective W_tk.
    """

    nonpositive: ClassVar[tuple[str, ...]] = ()

    def __init__(self, input_size: int, hidden_size: int, inner: str = "tanh"):
        if inner not in TIME_GATE_INNER:
            raise ValueError(f"inner (the time gates' σ_Δt) must be one of {', '.join(TIME_GATE_INNER)}, got {inner!r}")
        self.inner = inner  # a plain attribute: no parameters, so old state dicts load unchanged
        super().__init__(input_size, hidden_size)

    def _extra_parameters(self) -> None:
        for g in self.time_gate_names:
            self.register_parameter(self._weight_name(g), nn.Parameter(torch.empty(1, self.hidden_size)))
        self.w_to = nn.Parameter(torch.empty(1, self.hidden_size))

    def _weight_name(self, gate: str) -> str:
        """Parameter behind W_t<gate>: ``w_tt`` (gate "t"), ``w_t2``; ``v_t1`` when constrained."""
        name = "tt" if gate == "t" else gate
        return f"v_{name}" if gate in self.nonpositive else f"w_{name}"

    @property
    def time_gate_names(self) -> tuple[str, ...]:
        return self.gates[len(self.recurrent_gates) :]

    def reset_parameters(self) -> None:
        """Time weights U(−1, 1) (the default init of a Linear with one input); constrained ones
        −U(0.001, 1), through the inverse softplus."""
        super().reset_parameters()
        with torch.no_grad():
            for g in self.time_gate_names:
                weight = getattr(self, self._weight_name(g))
                if g in self.nonpositive:
                    magnitude = torch.empty_like(weight).uniform_(1e-3, 1.0)
                    weight.copy_(_inverse_softplus(magnitude))
                else:
                    weight.uniform_(-1.0, 1.0)
            self.w_to.uniform_(-1.0, 1.0)

    def time_weight(self, gate: str) -> torch.Tensor:
        """The effective W_t<gate> [1, H] (−softplus(v) for the constrained gates)."""
        weight = getattr(self, self._weight_name(gate))
        return -F.softplus(weight) if gate in self.nonpositive else weight

    def project_inputs(self, x: torch.Tensor, dt: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        blocks = list(self.x_proj(x).split(self.hidden_size, dim=-1))  # G x [..., H]
        dt = dt.to(x.dtype).unsqueeze(-1)  # [..., 1]
        o = self.gates.index("o")
        blocks[o] = blocks[o] + dt * self.w_to  # + Δt W_to
        for k, gate in enumerate(self.gates):
            if gate in self.recurrent_gates:
                continue
            w = self.time_weight(gate)  # [1, H]
            squashed = torch.tanh(dt * w) if self.inner == "tanh" else torch.sigmoid(dt * w)  # σ_Δt(Δt W_tk) [..., H]
            blocks[k] = torch.sigmoid(blocks[k] + squashed)  # T_k [..., H]
        return torch.cat(blocks, dim=-1)  # [..., G * H]: recurrent pre-activations, then T's

    def _time_gates(self, p: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """T, or (T1, T2), from :meth:`project_inputs`' output; each [B, H]."""
        return p[..., self.recurrent_width :].chunk(len(self.time_gate_names), dim=-1)


class TimeLSTM1Cell(_TimeGatedCell):
    """Time-LSTM 1: one time gate T filters the current item's contribution to the cell::

        i = σ(x W_xi + h_prev W_hi + w_ci ⊙ c_prev + b_i)
        f = σ(x W_xf + h_prev W_hf + w_cf ⊙ c_prev + b_f)
        T = σ(x W_xt + σ_Δt(Δt W_tt) + b_t)      (σ_Δt: tanh, see _TimeGatedCell)
        c = f ⊙ c_prev + i ⊙ T ⊙ tanh(x W_xc + h_prev W_hc + b_c)
        o = σ(x W_xo + Δt W_to + h_prev W_ho + w_co ⊙ c + b_o)
        h = o ⊙ tanh(c)
    """

    gates = ("i", "f", "c", "o", "t")

    def step(self, p: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        h_prev, c_prev = state
        zi, zf, zc, zo = self._recurrent(p, h_prev)  # each [B, H]
        (T,) = self._time_gates(p)  # [B, H]
        i = torch.sigmoid(zi + self.w_ci * c_prev)
        f = torch.sigmoid(zf + self.w_cf * c_prev)
        c = f * c_prev + i * T * torch.tanh(zc)
        o = torch.sigmoid(zo + self.w_co * c)
        h = o * torch.tanh(c)
        return h, (h, c)


class TimeLSTM2Cell(_TimeGatedCell):
    """Time-LSTM 2: T1 shapes this step's output (short-term interest), T2 what is stored for
    later steps (long-term interest)::

        i  = σ(x W_xi + h_prev W_hi + w_ci ⊙ c_prev + b_i)
        f  = σ(x W_xf + h_prev W_hf + w_cf ⊙ c_prev + b_f)
        T1 = σ(x W_x1 + σ_Δt(Δt W_t1) + b_1),   W_t1 ≤ 0
        T2 = σ(x W_x2 + σ_Δt(Δt W_t2) + b_2)
        g  = tanh(x W_xc + h_prev W_hc + b_c)
        c̃  = f ⊙ c_prev + i ⊙ T1 ⊙ g          (this step's output only)
        c  = f ⊙ c_prev + i ⊙ T2 ⊙ g          (carried to the next step)
        o  = σ(x W_xo + Δt W_to + h_prev W_ho + w_co ⊙ c̃ + b_o)
        h  = o ⊙ tanh(c̃)

    The state carried on is (h, c): c (with T2), not c̃.

    W_t1 ≤ 0 makes T1 decrease with Δt (the longer until the next action, the less the current
    item should drive the prediction). It is enforced by reparameterisation, W_t1 = −softplus(v_t1)
    with v_t1 free, so it holds for any optimizer and any step size and the weight keeps a useful
    gradient. A clamp after each update (the official Theano code's approach) is fragile: there it
    is written backwards and pins the weight at −1e-5, so T1 effectively ignores Δt.
    """

    gates = ("i", "f", "c", "o", "t1", "t2")
    nonpositive = ("t1",)

    def step(self, p: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        h_prev, c_prev = state
        zi, zf, zc, zo = self._recurrent(p, h_prev)  # each [B, H]
        T1, T2 = self._time_gates(p)  # each [B, H]
        i = torch.sigmoid(zi + self.w_ci * c_prev)
        f = torch.sigmoid(zf + self.w_cf * c_prev)
        g = torch.tanh(zc)
        kept = f * c_prev
        c_tilde = kept + i * T1 * g  # [B, H]
        c = kept + i * T2 * g  # [B, H]
        o = torch.sigmoid(zo + self.w_co * c_tilde)
        h = o * torch.tanh(c_tilde)
        return h, (h, c)


class TimeLSTM3Cell(_TimeGatedCell):
    """Time-LSTM 3: Time-LSTM 2 with coupled input and forget gates (no f gate)::

        i  = σ(x W_xi + h_prev W_hi + w_ci ⊙ c_prev + b_i)
        T1 = σ(x W_x1 + σ_Δt(Δt W_t1) + b_1),   W_t1 ≤ 0 (reparameterised, see TimeLSTM2Cell)
        T2 = σ(x W_x2 + σ_Δt(Δt W_t2) + b_2)
        g  = tanh(x W_xc + h_prev W_hc + b_c)
        c̃  = (1 − i ⊙ T1) ⊙ c_prev + i ⊙ T1 ⊙ g
        c  = (1 − i) ⊙ c_prev + i ⊙ T2 ⊙ g     (carried to the next step)
        o  = σ(x W_xo + Δt W_to + h_prev W_ho + w_co ⊙ c̃ + b_o)
        h  = o ⊙ tanh(c̃)
    """

    gates = ("i", "c", "o", "t1", "t2")
    recurrent_gates = ("i", "c", "o")
    peepholes = ("i", "o")
    nonpositive = ("t1",)

    def step(self, p: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        h_prev, c_prev = state
        zi, zc, zo = self._recurrent(p, h_prev)  # each [B, H]
        T1, T2 = self._time_gates(p)  # each [B, H]
        i = torch.sigmoid(zi + self.w_ci * c_prev)
        g = torch.tanh(zc)
        i1 = i * T1
        c_tilde = (1.0 - i1) * c_prev + i1 * g  # [B, H]
        c = (1.0 - i) * c_prev + i * T2 * g  # [B, H]
        o = torch.sigmoid(zo + self.w_co * c_tilde)
        h = o * torch.tanh(c_tilde)
        return h, (h, c)


CELLS: dict[str, type[TimeCell]] = {
    "lstm": LSTMCell,
    "lstm_t": LSTMTCell,
    "plstm": PhasedLSTMCell,
    "tlstm1": TimeLSTM1Cell,
    "tlstm2": TimeLSTM2Cell,
    "tlstm3": TimeLSTM3Cell,
}
