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
matrix product (no loop over candidates or clicks), then runs the 3-D CNN on the real candidates only.

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
        self, user: UserInputs, candidates: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        cfg = self.config
        lv, length, f, k = len(cfg.dilations), cfg.title_words, cfg.filters, cfg.history_clicks
        clicks, real = user.history_vectors, user.history_mask  # [B, H, D], [B, H]
        b, h, d = clicks.shape
        # Real clicks last, in order (a stable sort of "is real"), then the K most recent, right-aligned.
        order = torch.argsort(real.to(torch.int8), dim=1, stable=True)  # [B, H]
        clicks = clicks.gather(1, order.unsqueeze(-1).expand(b, h, d)) * real.gather(1, order).unsqueeze(-1)
        clicks = F.pad(clicks, (0, 0, max(0, k - h), 0))[:, -k:]  # [B, K, D]
        empty = k - torch.clamp(real.sum(dim=1), max=k)  # [B] padded click slots, all on the old side
        c = candidates.shape[1]
        clicks = clicks.view(b, k, lv, length, f).permute(0, 2, 4, 1, 3).reshape(b, lv, f, k * length)  # [B, lv, F, K*L]
        cands = candidates.view(b, c, lv, length, f).permute(0, 2, 1, 3, 4) / f ** 0.5  # [B, lv, C, L, F], scaled
        # Every word-word similarity of every (candidate, click, level) of the batch in one product.
        sim = torch.matmul(cands.reshape(b, lv, c * length, f), clicks)  # [B, lv, C*L, K*L]
        cubes = sim.view(b, lv, c, length, k, length).permute(0, 2, 1, 4, 3, 5)  # [B, C, lv, K, L, L]
        empty = empty[:, None].expand(b, c)  # [B, C]
        if mask is None:
            return self.dense(self.match(cubes.reshape(b * c, lv, k, length, length), empty.reshape(-1))).view(b, c)
        scores = candidates.new_zeros(b, c)  # padding candidates score 0
        scores[mask] = self.dense(self.match(cubes[mask], empty[mask])).squeeze(-1)  # only the real candidates
        return scores

    def match(self, cubes: torch.Tensor, empty: torch.Tensor) -> torch.Tensor:
        """The 3-D CNN, flattened: [P, features] of cubes [P, lv, K, L, L] whose first ``empty`` [P]
        click slots are padding (zero matrices).

        Exactly Conv3d -> ReLU -> MaxPool3d per block, computed faster in two exact ways: ReLU after the
        pooling (max and ReLU commute), and the first convolution skips the padding slots: where its
        3 x 3 x 3 window sees only zeros its output is its bias, so it runs from the first pooling
        window that can see a real click, and the windows before are filled with the bias. Cubes are
        grouped by that start (at most K / pool + 1 groups, never one call per candidate).
        """
        pool = self.config.pool
        layers = list(self.cnn3d)
        convs = [m for m in layers if isinstance(m, nn.Conv3d)]
        first = convs[0]
        start = torch.div(torch.clamp(empty - 1, min=0), pool, rounding_mode="floor") * pool  # [P], a pool multiple
        start = torch.clamp(start, max=pool * (cubes.shape[2] // pool - 1))  # at least one window computed
        out = None
        for skip in torch.unique(start).tolist():
            rows = (start == skip).nonzero().squeeze(1)  # [p]
            x = F.max_pool3d(first(cubes[rows, :, skip:]), pool)  # [p, C1, (K - skip) // pool, L', L']
            if skip:  # windows over padding slots only: the bias
                n, c1, _, l1, l2 = x.shape
                filled = first.bias.view(1, c1, 1, 1, 1).expand(n, c1, skip // pool, l1, l2)
                x = torch.cat([filled, x], dim=2)  # [p, C1, K // pool, L', L']
            x = torch.relu(x)
            for conv in convs[1:]:
                x = torch.relu(F.max_pool3d(conv(x), pool))
            x = x.flatten(1)  # [p, features]
            if out is None:
                out = x.new_empty(len(cubes), x.shape[1])
            out[rows] = x
        return out  # [P, features]
