"""PNG charts for the reports: daily call volume per campaign or per peer.

matplotlib (the ``reports`` extra) is imported here, lazily, on the Agg
backend: the proxy itself never imports it, and a machine without a
display draws the same charts.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path

SERIES = 10  # lines drawn at most; the rest would be unreadable


class ChartsUnavailable(RuntimeError):
    """matplotlib is not installed."""


def daily_chart(
    path: Path,
    title: str,
    days: Sequence[dt.date],
    series: Sequence[tuple[str, dict[dt.date, int]]],
    ylabel: str = "calls per day",
) -> None:
    """One line per series over ``days`` (the first ``SERIES`` series)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ChartsUnavailable(
            "matplotlib is not installed: pip install 'robocall-shield[reports]' for charts"
        ) from None
    fig, ax = plt.subplots(figsize=(11, 5.5), dpi=100)
    try:
        x = list(range(len(days)))
        for label, daily in series[:SERIES]:
            ax.plot(x, [daily.get(d, 0) for d in days], marker=".", label=label)
        ticks = x[:: max(1, len(x) // 15)]
        ax.set_xticks(ticks, [days[i].strftime("%m-%d") for i in ticks])
        ax.set_title(title)
        ax.set_ylabel(ylabel)
        ax.set_xlabel("day (UTC)")
        ax.grid(True, alpha=0.3)
        if series:
            ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
        else:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
        fig.autofmt_xdate()
        fig.tight_layout()
        fig.savefig(path, format="png")
    finally:
        plt.close(fig)
