"""newsrank.layers: the segment operations FUM's fine-grained user model pools with."""

from __future__ import annotations

import torch

from newsrank.layers import segment_softmax, segment_weighted_sum


def _segments():
    counts = torch.tensor([3, 0, 1, 4, 0])  # two empty segments
    rows = torch.tensor([2, 2, 0, 5, 1, 1, 1, 3])  # repeated rows, within a segment too
    weights = torch.rand(len(rows), generator=torch.Generator().manual_seed(0))
    table = torch.randn(6, 4, generator=torch.Generator().manual_seed(1))
    return counts, rows, weights, table


def _plain(counts, rows, weights, table):
    sums, start = [], 0
    for n in counts.tolist():
        picked = slice(start, start + n)
        sums.append((weights[picked, None] * table[rows[picked]]).sum(dim=0))
        start += n
    return torch.stack(sums)


def test_segment_weighted_sum_sparse_and_gathered_paths_agree():
    counts, rows, weights, table = _segments()
    expected = _plain(counts, rows, weights, table)
    with torch.no_grad():  # the sparse product (CPU, no autograd)
        torch.testing.assert_close(segment_weighted_sum(counts, rows, weights, table), expected)
    table.requires_grad_(True)  # the gather, which autograd can run through
    out = segment_weighted_sum(counts, rows, weights, table)
    torch.testing.assert_close(out, expected)
    out.sum().backward()
    per_row = torch.zeros(len(table)).index_add(0, rows, weights)  # each row's total weight
    torch.testing.assert_close(table.grad, per_row[:, None].expand_as(table))
    # bf16 rows (under autocast) are summed in fp32
    with torch.no_grad():
        low = segment_weighted_sum(counts, rows, weights, table.detach().bfloat16())
    assert low.dtype == torch.float32
    torch.testing.assert_close(low, expected, rtol=1e-2, atol=1e-2)


def test_segment_softmax_sums_to_one_per_segment():
    segment = torch.tensor([0, 0, 2, 2, 2, 3])
    weights = segment_softmax(torch.tensor([1.0, 2.0, 1000.0, 1000.0, -5.0, 3.0]), segment, 4)
    totals = torch.zeros(4).index_add(0, segment, weights)
    torch.testing.assert_close(totals, torch.tensor([1.0, 0.0, 1.0, 1.0]))
    torch.testing.assert_close(weights[2:4], torch.tensor([0.5, 0.5]))  # large scores stay finite
