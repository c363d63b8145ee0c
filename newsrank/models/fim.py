"""FIM: Fine-grained Interest Matching for Neural News Recommendation (Wang et al., ACL 2020).

News representation: hierarchical dilated convolution (HDC) over the title's word embeddings
d^0 = e_{1:L}, one level per dilation rate r_l (1, 2, 3):

    d^l_i = ReLU( LayerNorm( W_l [d^{l-1}_{i - w r_l}; ...; d^{l-1}_{i + w r_l}] + b_l ) )    (window 2w + 1)

giving token-level states d^l in R^{L x F} at every level (F = ``filters``).

Fine-grained matching of a candidate c with each clicked news k, at each level l:

    M^l_{k,c}[i, j] = d^l_c[i] . d^l_k[j] / sqrt(F)            (an L x L word-word similarity matrix)
    Q_c = stack over k = 1..K and l of M^l_{k,c}                 (a 3-D image K x L x L with one channel per level)

3-D CNN over Q_c: Conv3d(32, 3x3x3, same) -> ReLU -> MaxPool3d(3) -> Conv3d(16, 3x3x3, same) ->
ReLU -> MaxPool3d(3) -> flatten -> dense -> the score s_c. Defaults follow the paper and its public
reimplementations: dilations 1, 2, 3, 150 filters, window 3, 3-D filters 32 and 16, pooling 3.

How it fits newsrank's contract: FIM is ``candidate_aware`` (the matching reads each candidate with
every clicked news, so there is no user vector to cache). Its per-news output, which the trainer and
the evaluator compute once per distinct news item, is the stack of HDC states flattened:
[levels * title_words * filters] (9,000 floats per news with the defaults); ``score_candidates``
reshapes it back and computes all B x C x K x levels similarity matrices of a batch with one batched
matrix product (no loop over candidates or clicks), then runs the 3-D CNN on the real candidates only,
and only where a cube is not zero: padded clicks and padded title words leave most of a cube zero
(MovieLens titles have ~4.7 words of 20), and the CNN's output there is known (``match``). Exact:
same scores and weight gradients as the plain stack (a test checks both).

Deviations and why:
* Fixed shapes. The flattened 3-D CNN output feeds a dense layer, so K and L are part of the model:
  ``title_words`` (first words kept, shorter titles zero-padded; the packaged YAML sets the data's
  ``title_len`` to the same 20) and ``history_clicks`` (the most recent clicks; fewer are
  zero-padded on the old side). Both must be at least ``pool ** 2`` (9) for the pooling to leave
  anything.
* Padding: padded words are zeroed at every HDC level (their similarities are exactly 0, and a
  title's states do not depend on how wide its batch was), padded clicks are zero matrices, and the
  history is always right-aligned to ``history_clicks`` slots, so extra history padding changes
  nothing. The 3-D CNN still sees the zero matrices (as the reference does, with no mask).
* Training uses the shared softmax over 1 + npratio candidates (as the paper); evaluation ranks by
  the raw dense output.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..data.batching import NewsFeatures, UserInputs
from ..data.vocab import PAD
from .base import ModelContext, NewsRecModel, word_embedding


@dataclass
class FIMConfig:
    word_dim: int = 300  # word embedding size without pretrained vectors (else theirs)
    filters: int = 150  # HDC filters F per level
    window: int = 3  # HDC window (odd)
    dilations: list[int] = field(default_factory=lambda: [1, 2, 3])  # one HDC level per dilation rate
    title_words: int = 20  # words per title the matching reads (the first N; shorter are padded)
    history_clicks: int = 50  # clicked news the matching reads (the most recent; fewer are padded)
    conv3d_filters: list[int] = field(default_factory=lambda: [32, 16])  # 3-D CNN channels, one conv per entry
    pool: int = 3  # 3-D max-pooling size and stride after each conv
    dropout: float = 0.2  # on word embeddings


class FIM(NewsRecModel):
    config_class = FIMConfig
    candidate_aware = True

    def __init__(self, config: FIMConfig, context: ModelContext):
        super().__init__()
        if config.window % 2 != 1:
            raise ValueError(f"window must be odd, got {config.window}")
        if not config.dilations or min(config.dilations) < 1:
            raise ValueError(f"dilations must be positive, got {config.dilations}")
        shrink = config.pool ** len(config.conv3d_filters)
        for name in ("title_words", "history_clicks"):
            if getattr(config, name) < shrink:
                raise ValueError(f"{name} must be >= pool ** len(conv3d_filters) = {shrink}, "
                                 f"got {getattr(config, name)}")
        self.config = config
        self.words = word_embedding(context, config.word_dim)
        self.dropout = nn.Dropout(config.dropout)
        dims = [self.words.embedding_dim] + [config.filters] * len(config.dilations)
        self.hdc = nn.ModuleList(
            nn.Conv1d(dims[i], config.filters, config.window, dilation=r, padding=r * (config.window // 2))
            for i, r in enumerate(config.dilations)
        )
        self.norms = nn.ModuleList(nn.LayerNorm(config.filters) for _ in config.dilations)
        layers: list[nn.Module] = []
        channels = len(config.dilations)
        for out in config.conv3d_filters:
            layers += [nn.Conv3d(channels, out, 3, padding=1), nn.ReLU(), nn.MaxPool3d(config.pool)]
            channels = out
        self.cnn3d = nn.Sequential(*layers, nn.Flatten())
        k, length = config.history_clicks, config.title_words
        for _ in config.conv3d_filters:
            k, length = k // config.pool, length // config.pool
        self.dense = nn.Linear(channels * k * length * length, 1)
        self.news_dim = len(config.dilations) * config.title_words * config.filters

    def encode_news(self, news: NewsFeatures, users: torch.Tensor | None = None) -> torch.Tensor:
        """[N, levels * title_words * filters]: the HDC states of every level, flattened."""
        length = self.config.title_words
        title = news.title[:, :length]
        title = F.pad(title, (0, length - title.shape[1]))  # [N, L]
        keep = (title != PAD).unsqueeze(1).to(torch.float32)  # [N, 1, L]
        x = self.dropout(self.words(title)).transpose(1, 2) * keep  # [N, word_dim, L]
        levels = []
        for conv, norm in zip(self.hdc, self.norms):
            x = torch.relu(norm(conv(x).transpose(1, 2))).transpose(1, 2) * keep  # [N, F, L], padding zeroed
            levels.append(x.transpose(1, 2))  # [N, L, F]
        return torch.stack(levels, dim=1).flatten(1)  # [N, levels * L * F]

    def score_candidates(
        self, user: UserInputs, candidates: torch.Tensor, mask: torch.Tensor | None = None, *,
        candidate_features: torch.Tensor | None = None,
    ) -> torch.Tensor:
        cfg = self.config
        lv, length, f, k = len(cfg.dilations), cfg.title_words, cfg.filters, cfg.history_clicks
        clicks, real = user.history_vectors, user.history_mask  # [B, H, D], [B, H]
        b, h, d = clicks.shape
        # Real clicks last, in order (a stable sort of "is real"), then the K most recent, right-aligned.
        order = torch.argsort(real.to(torch.int8), dim=1, stable=True)  # [B, H]
        clicks = clicks.gather(1, order.unsqueeze(-1).expand(b, h, d)) * real.gather(1, order).unsqueeze(-1)
        clicks = F.pad(clicks, (0, 0, max(0, k - h), 0))[:, -k:]  # [B, K, D]
        c = candidates.shape[1]
        cands = candidates.view(b, c, lv, length, f)
        clicks = clicks.view(b, k, lv, length, f)
        # Each (candidate, user) cube is zero outside a box: the real click slots (the last n of K)
        # times the candidate's words up to its last real one times the clicks' words up to the
        # longest click's last one (padded words are zero vectors at every level).
        n_real = torch.clamp(real.sum(dim=1), max=k)  # [B]
        cand_last = last_true(cands.ne(0).any(dim=4).any(dim=2))  # [B, C], -1 for no word
        click_last = last_true(clicks.ne(0).any(dim=4).any(dim=2).any(dim=1))  # [B]
        if mask is None:
            mask = torch.ones(b, c, dtype=torch.bool, device=candidates.device)
        owner = mask.nonzero()[:, 0]  # [P] the impression of each real candidate
        scores = candidates.new_zeros(b, c)  # padding candidates score 0
        if not len(owner):
            return scores
        boxes = torch.stack([torch.stack([k - n_real, torch.full_like(n_real, k - 1)], 1)[owner],
                             torch.stack([torch.zeros_like(cand_last), cand_last], -1)[mask],
                             torch.stack([torch.zeros_like(click_last), click_last], 1)[owner]], dim=1)  # [P, 3, 2]
        spans = self.first_windows(boxes)  # [P, 3, 2]
        # Similarities only over the words some cube of the batch needs (the crop ends of `match`).
        ends = torch.clamp((spans[:, 1:, 1] + 1) * cfg.pool + 1, max=length).amax(dim=0).tolist()
        cands = cands[:, :, :, : ends[0]].permute(0, 2, 1, 3, 4) / f ** 0.5  # [B, lv, C, I, F], scaled
        clicks = clicks[:, :, :, : ends[1]].permute(0, 2, 4, 1, 3).reshape(b, lv, f, k * ends[1])  # [B, lv, F, K*J]
        # Every needed word-word similarity of every (candidate, click, level) of the batch in one product.
        sim = torch.matmul(cands.reshape(b, lv, c * ends[0], f), clicks)  # [B, lv, C*I, K*J]
        cubes = sim.view(b, lv, c, ends[0], k, ends[1]).permute(0, 2, 1, 4, 3, 5)  # [B, C, lv, K, I, J], a view
        pairs = (owner, mask.nonzero()[:, 1])  # [P], [P]: the real candidates only
        real = self.dense(self.match(cubes, spans, pairs)).squeeze(-1)  # [P] (bf16 under autocast)
        scores[mask] = real.to(scores.dtype)
        return scores

    def match(self, cubes: torch.Tensor, spans: torch.Tensor | None = None,
              pairs: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """The 3-D CNN, flattened: [P, features] of similarity cubes [P, lv, K, L, L] (or, with
        ``pairs`` = (impression, candidate) indices [P] each, of ``cubes[pairs]`` from [B, C, lv, K, L, L]).

        Exactly the Conv3d -> ReLU -> MaxPool3d stack of ``cnn3d``, computed only where a cube differs
        from an all-zero one. A cube is zero outside a box: the slots of padded clicks, and the rows
        and columns of padded title words (a short title leaves most of its L x L matrices zero). Were
        the input zero, every layer's output would be a fixed "background" (the first conv's bias,
        then what the next layers make of it), computed once per call on one zero cube. Each layer is
        linear before its ReLU, so its output is the background's plus the conv (without bias) of
        the input's difference from the background's input; that difference is zero outside the
        box, so only the pooling windows the box reaches are computed, from a crop, and every other
        window keeps the background's value. The box grows by one window per layer. Cubes with the
        same windows are batched together (a few dozen groups per batch, never one call per
        candidate). ReLU is applied after the pooling (max and ReLU commute). Weight gradients are
        those of the plain stack too (only gradients into the cubes' zeros outside the box differ,
        by which tied window maximum receives them).

        ``spans`` [P, 3, 2] are the first layer's windows (``first_windows`` of the boxes) when the
        caller knows the boxes; otherwise they are read off the cubes' non-zero entries. The cubes may
        then be cropped along the word dimensions to the largest window crop end (zeros beyond).
        """
        pool, cfg = self.config.pool, self.config
        convs = [m for m in self.cnn3d if isinstance(m, nn.Conv3d)]
        # Background: every layer's pre-pooling output B_s and pooled, ReLU'd output on a zero cube.
        backgrounds = []
        x = cubes.new_zeros(1, len(cfg.dilations), cfg.history_clicks, cfg.title_words, cfg.title_words)
        for conv in convs:
            full = conv(x)  # [1, C, S1, S2, S3]
            x = torch.relu(F.max_pool3d(full, pool))
            backgrounds.append((full[0], x[0]))
        if spans is None:  # the box (cubes [P, ...] only): first and last non-zero index along K, L (candidate), L (click)
            nonzero = cubes.ne(0).any(dim=1)  # [P, K, L, L]
            hits = [nonzero.any(dim=3).any(dim=2), nonzero.any(dim=3).any(dim=1), nonzero.any(dim=2).any(dim=1)]
            spans = self.first_windows(torch.stack(
                [torch.stack([first_true(h), last_true(h)], 1) for h in hits], dim=1))
        groups, inverse = torch.unique(spans.flatten(1), dim=0, return_inverse=True)
        out = None
        for g, key in enumerate(groups.tolist()):
            rows = (inverse == g).nonzero().squeeze(1)  # [p]
            # The first layer's input crop: windows [lo, hi] need inputs [lo * pool - 1, (hi + 1) * pool];
            # the one before is zero (lo * pool < the box's first), so the conv's zero padding stands in.
            crop = tuple(slice(lo * pool, (hi + 1) * pool + 1) for lo, hi in zip(key[::2], key[1::2]))
            if pairs is None:
                first = cubes[rows][(slice(None), slice(None), *crop)]  # [p, lv, c1, c2, c3]
            else:  # crop the view first, so that only the crop is copied
                first = cubes[(slice(None),) * 3 + crop][pairs[0][rows], pairs[1][rows]]
            feats = self._match_group(first, key, convs, backgrounds)  # [p, features]
            if out is None:
                out = feats.new_empty(len(spans), feats.shape[1])
            out[rows] = feats.to(out.dtype)
        return out  # [P, features]

    def first_windows(self, boxes: torch.Tensor) -> torch.Tensor:
        """[P, 3, 2] the first layer's pooling windows (first, last) along K, L, L that reach the
        boxes [P, 3, 2] (first, last index; last < first for an empty dimension)."""
        sizes = (self.config.history_clicks, self.config.title_words, self.config.title_words)
        return torch.stack([self._windows(boxes[:, i, 0], boxes[:, i, 1], size) for i, size in enumerate(sizes)], 1)

    def _windows(self, first: torch.Tensor, last: torch.Tensor, size: int) -> torch.Tensor:
        """[P, 2] first and last pooling window (of ``size // pool``) whose conv outputs can see a
        non-background input in [first, last] (a 3-wide conv reaches one step either side)."""
        pool, count = self.config.pool, size // self.config.pool
        first, last = torch.where(last < first, 0, first), torch.where(last < first, 0, last)  # empty: one window
        hi = torch.clamp(torch.div(last + 1, pool, rounding_mode="floor"), max=count - 1)
        lo = torch.minimum(torch.div(torch.clamp(first - 1, min=0), pool, rounding_mode="floor"), hi)
        return torch.stack([lo, hi], dim=1)

    def _match_group(self, first: torch.Tensor, key: list[int], convs: list[nn.Conv3d], backgrounds) -> torch.Tensor:
        """[p, features] of cubes that all reach the same first-layer windows ``key`` (lo, hi per
        dimension), from the first layer's input crop ``first`` [p, lv, c1, c2, c3]; see ``match``."""
        pool = self.config.pool
        spans = [(key[0], key[1]), (key[2], key[3]), (key[4], key[5])]
        diff = None  # a layer's input minus the background's input: zero outside the last windows
        for layer, (conv, (full, pooled)) in enumerate(zip(convs, backgrounds)):
            if layer:  # the windows this layer's conv outputs must be computed for, from the last box
                count = [size // pool for size in diff.shape[2:]]
                spans = [(min(max(lo - 1, 0) // pool, (hi + 1) // pool, n - 1), min((hi + 1) // pool, n - 1))
                         for (lo, hi), n in zip(spans, count)]  # as _windows, on plain ints
            # The input crop, as for the first layer in ``match``.
            crop = first if diff is None else diff[(slice(None), slice(None), *(
                slice(lo * pool, (hi + 1) * pool + 1) for lo, hi in spans))]  # [p, C_in, c1, c2, c3]
            # The first layer's background is its bias alone; later ones add the background's output.
            y = F.conv3d(crop, conv.weight, None if layer else conv.bias, padding=1)  # [p, C, c1, c2, c3]
            if layer:  # (the pooling drops a trailing extra output by itself; the sum needs equal shapes)
                box = tuple(slice(lo * pool, (hi + 1) * pool) for lo, hi in spans)
                y = y[:, :, : box[0].stop - box[0].start, : box[1].stop - box[1].start, : box[2].stop - box[2].start]
                y = y + full[(slice(None), *box)]
            block = torch.relu(F.max_pool3d(y, pool))  # [p, C, w1, w2, w3]
            out = pooled.expand(len(first), *pooled.shape).clone()  # [p, C, S1', S2', S3'] the background
            out[(slice(None), slice(None), *(slice(lo, hi + 1) for lo, hi in spans))] = block.to(out.dtype)
            diff = out - pooled  # exactly zero outside the windows just computed
        return out.flatten(1)  # [p, features]


def last_true(hits: torch.Tensor) -> torch.Tensor:
    """[...] index of the last True along the last dimension of ``hits``, -1 where there is none."""
    size = hits.shape[-1]
    return torch.where(hits.any(dim=-1), size - 1 - hits.flip(-1).to(torch.int8).argmax(dim=-1), -1)


def first_true(hits: torch.Tensor) -> torch.Tensor:
    """[...] index of the first True along the last dimension of ``hits``, its length where there is none."""
    return torch.where(hits.any(dim=-1), hits.to(torch.int8).argmax(dim=-1), hits.shape[-1])
