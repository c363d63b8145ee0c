"""What a trained PLSTM run reads at a prediction: its time gate k at the last step of every test
prefix, and full Recall@10 as trained and with that last step alone fully open (k = 1 for every
unit, the rest of the prefix as trained). A diagnostic for the RESULTS.md analysis, not a timed
benchmark.

    python benchmarks/plstm_openness.py --run RUN --events FILE [--format csv]

With ``plstm_readout=gated`` (Neil et al.'s output) the share of units with k > 0 at an instant
is r_on whatever the periods and shifts, so that is the share of the output that reacts to the
last event before a prediction.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's newsrank

from newsrank.seq import load_seq_checkpoint, make_split  # noqa: E402
from newsrank.seq.batching import to_tensors  # noqa: E402
from newsrank.seq.events import read_events  # noqa: E402
from newsrank.seq.metrics import full_ranks  # noqa: E402
from newsrank.seq.sequences import build_sequences, split_last  # noqa: E402


@torch.no_grad()
def last_hidden(model, batch: dict, open_last: bool) -> torch.Tensor:
    """[B, H]: the output at each row's last real step; with ``open_last`` that step runs with k = 1."""
    cell = model.cell
    p = cell.project_inputs(model.items(batch["items"]), batch["delta_next"].float(), batch["seconds"])  # [B, L, P]
    last = batch["mask"].sum(1) - 1  # [B]
    if open_last:
        rows = torch.arange(len(last))
        p[rows, last, cell.recurrent_width :] = 1.0  # k of the last step
    p = p.transpose(0, 1)  # [L, B, P]
    keep = batch["mask"].transpose(0, 1).unsqueeze(-1)  # [L, B, 1]
    state = cell.initial_state(p.shape[1])
    out = torch.zeros(p.shape[1], cell.hidden_size)
    for s in range(p.shape[0]):
        h, new = cell.step(p[s], state)
        state = tuple(torch.where(keep[s], n, o) for n, o in zip(new, state))
        out = torch.where((last == s).unsqueeze(-1), h, out)
    return out


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--events", type=Path, required=True)
    parser.add_argument("--format", default="csv")
    args = parser.parse_args()
    torch.set_num_threads(1)
    model, config, vocab, _ = load_seq_checkpoint(args.run)
    if config.model.cell != "plstm" or config.model.plstm_time != "linear":
        sys.exit("a PLSTM run on the linear clock is needed")
    model.eval()
    sequences, _ = build_sequences(read_events(args.events, args.format), config.data, vocab=vocab)
    prefixes, targets = split_last(make_split(sequences, config.data).test)
    targets = np.asarray(targets)
    ks, ranks = [], {False: [], True: []}
    for start in range(0, len(prefixes), 256):
        batch = to_tensors(prefixes[start : start + 256], torch.device("cpu"))
        last = batch["mask"].sum(1) - 1
        ks.append(model.cell.openness(batch["seconds"])[torch.arange(len(last)), last].numpy())  # [B, H]
        for open_last in (False, True):
            scores = model.logits(last_hidden(model, batch, open_last)).numpy()
            ranks[open_last].append(full_ranks(scores, targets[start : start + 256]))
    k = np.concatenate(ks)
    r_on = model.cell.r_on.detach().float().mean().item()
    print(f"run {args.run}: r_on {r_on:g}, readout {config.model.plstm_readout}, {len(targets)} test prefixes")
    print(f"k at the last step: mean {k.mean():.4f}; share of units with k > 0.5: {(k > 0.5).mean():.4f}, "
          f"k > 0.01: {(k > 0.01).mean():.4f}")
    for open_last, name in ((False, "as trained"), (True, "last step fully open")):
        print(f"full Recall@10, {name}: {(np.concatenate(ranks[open_last]) <= 10).mean():.4f}")


if __name__ == "__main__":
    main()
