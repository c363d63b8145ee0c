"""Plots shared by the news and the sequence runs: per-epoch training curves (``RUN/curves.png``)
and grouped bars comparing runs (``newsrank report``'s ``compare.png``).

matplotlib is optional (``pip install 'newsrank[plot]'``): without it nothing is drawn, the
caller's run goes on, and :func:`plotting_available` logs one line saying that plots are off.
The Agg backend draws to files only (no display needed); files are written atomically.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from .atomic import atomic_file

log = logging.getLogger("newsrank")

_warned = False


def plotting_available() -> bool:
    """Whether matplotlib can be imported; the first time it cannot, one log line says plots are off."""
    global _warned
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only; must precede pyplot's import
        import matplotlib.pyplot  # noqa: F401
    except ImportError:
        if not _warned:
            log.info("matplotlib is not installed: plots are off (pip install 'newsrank[plot]')")
            _warned = True
        return False
    return True


def _number(value) -> float:
    """A plottable float: None (a metric nothing qualified for) becomes NaN, a gap in the line."""
    return float("nan") if value is None else float(value)


def _save(figure, path: Path) -> None:
    import matplotlib.pyplot as plt

    with atomic_file(path, binary=True) as handle:
        figure.savefig(handle, format="png", dpi=100)
    plt.close(figure)


def write_curves(path: str | Path, epochs: Sequence[int], losses: Sequence[float | None],
                 metrics: Mapping[str, Sequence[float | None]], title: str = "") -> bool:
    """Two panels into the PNG ``path``: training loss per epoch (left) and each evaluation metric
    per epoch (right, one line per ``metrics`` entry). Returns False (writing nothing) when
    matplotlib is missing."""
    if not plotting_available():
        return False
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    left.plot(epochs, [_number(v) for v in losses], marker="o", color="tab:red")
    left.set(xlabel="epoch", ylabel="train loss", title="training loss")
    left.ticklabel_format(axis="y", useOffset=False)  # the loss itself on the axis, not "+1.6e0" offsets
    for name, values in metrics.items():
        right.plot(epochs, [_number(v) for v in values], marker="o", label=name)
    right.set(xlabel="epoch", ylabel="value", title="evaluation after each epoch")
    if metrics:
        right.legend(fontsize="small")
    for axis in (left, right):
        axis.grid(alpha=0.3)
        axis.xaxis.get_major_locator().set_params(integer=True)  # epochs are whole numbers
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    _save(figure, Path(path))
    return True


def write_grouped_bars(path: str | Path, panels: Sequence[tuple[str, Sequence[str]]],
                       values: Mapping[str, Mapping[str, float | None]], title: str = "") -> bool:
    """Grouped bars into the PNG ``path``: one panel per ``(panel title, metric names)``, one group
    of bars per metric, one bar per series (``values[series][metric]``; a missing or None value
    leaves its slot empty). Returns False (writing nothing) when matplotlib is missing."""
    if not plotting_available():
        return False
    import matplotlib.pyplot as plt

    series = list(values)
    groups = [max(len(names), 1.5) for _, names in panels]  # panel widths follow their number of groups
    figure, axes = plt.subplots(1, len(panels), figsize=(min(16.0, 2.5 + 1.0 * sum(groups)), 4.2), squeeze=False,
                                gridspec_kw={"width_ratios": groups})
    width = 0.8 / max(len(series), 1)
    colors = plt.get_cmap("tab10")
    for axis, (panel_title, names) in zip(axes[0], panels):
        for s, name in enumerate(series):
            offset = (s - (len(series) - 1) / 2) * width
            # only the metrics this series has (a sequence run has no AUC, an old run no `beyond`)
            shown = [(m, _number(values[name].get(metric))) for m, metric in enumerate(names)]
            shown = [(m, h) for m, h in shown if not math.isnan(h)]
            axis.bar([m + offset for m, _ in shown], [h for _, h in shown], width, label=name, color=colors(s % 10))
        axis.set_xticks(range(len(names)), names, rotation=20)
        axis.set_xlim(-0.6, len(names) - 0.4)
        axis.set_title(panel_title)
        axis.grid(axis="y", alpha=0.3)
    from matplotlib.patches import Patch

    # one legend for all panels, with every series (also one with no bar in the last panel)
    handles = [Patch(color=colors(s % 10), label=name) for s, name in enumerate(series)]
    axes[0][-1].legend(handles=handles, fontsize="small", loc="center left", bbox_to_anchor=(1.0, 0.5))
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    _save(figure, Path(path))
    return True
