"""The benchmarks as pictures: PNG charts written beside docs/benchmarks.md and embedded in the
section of the script that measured them. Drawn by matplotlib (dev requirements only) from the
figures the scripts compute: throughput against concurrency, one line per server, backend or
protocol, and the latency percentiles of each.

`python bench/plots.py` redraws the charts from the figures already in docs/benchmarks.md (their
tables), without measuring again: after a change of style, or for figures of an earlier run.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, LogLocator, NullFormatter, NullLocator, ScalarFormatter
from report import BENCHMARKS_MD

# Keeps the PNGs byte-identical from run to run of the same figures (no matplotlib version).
_METADATA = {"Software": None}
_PERCENTILE_STYLES = {"p50": ("-", "C0"), "p95": ("--", "C1"), "p99": (":", "C3")}


@dataclass(frozen=True)
class Row:
    """One measurement: throughput and latency percentiles (name -> ms) at a concurrency."""

    concurrency: int
    images_per_s: float
    latency_ms: Mapping[str, float]


def concurrency_charts(
    key: str, subject: str, series: Mapping[str, Sequence[Row]], folder: Path | None = None
) -> str:
    """Draw `series` (its name -> its rows) as two PNGs named after the section `key`,
    throughput and latency against concurrency; the Markdown that shows them."""
    folder = folder or BENCHMARKS_MD.parent
    throughput = f"benchmarks-{key}-throughput.png"
    latency = f"benchmarks-{key}-latency.png"
    _throughput_chart(subject, series).savefig(folder / throughput, metadata=_METADATA)
    _latency_chart(subject, series).savefig(folder / latency, metadata=_METADATA)
    return (
        f"![{subject}: images/s against concurrency]({throughput})\n\n"
        f"![{subject}: latency percentiles against concurrency]({latency})"
    )


def _concurrency_axis(axes: Axes, concurrencies: Sequence[int]) -> None:
    """Concurrency doubles from point to point: a log-2 axis ticked at the values measured."""
    axes.set_xscale("log", base=2)
    axes.xaxis.set_major_locator(FixedLocator(sorted(set(concurrencies))))
    axes.xaxis.set_major_formatter(ScalarFormatter())
    axes.xaxis.set_minor_locator(NullLocator())
    axes.set_xlabel("concurrent clients")
    axes.grid(True, alpha=0.3)


def _throughput_chart(subject: str, series: Mapping[str, Sequence[Row]]) -> Figure:
    figure = Figure(figsize=(7.5, 4.2), dpi=100, layout="constrained")
    axes = figure.subplots()
    for name, rows in series.items():
        ordered = sorted(rows, key=lambda row: row.concurrency)
        axes.plot(
            [row.concurrency for row in ordered],
            [row.images_per_s for row in ordered],
            marker="o",
            label=name,
        )
    _concurrency_axis(axes, [row.concurrency for rows in series.values() for row in rows])
    axes.set_ylim(bottom=0)
    axes.set_ylabel("images/s")
    axes.set_title(f"{subject}: throughput")
    axes.legend(fontsize="small")
    return figure


def _latency_chart(subject: str, series: Mapping[str, Sequence[Row]]) -> Figure:
    columns = min(len(series), 4)
    lines = -(-len(series) // columns)
    figure = Figure(figsize=(3 * columns, 2.9 * lines + 0.4), dpi=100, layout="constrained")
    panels = figure.subplots(lines, columns, sharey=True, squeeze=False).flat
    for (name, rows), panel in zip(series.items(), panels, strict=False):
        ordered = sorted(rows, key=lambda row: row.concurrency)
        for percentile in ordered[0].latency_ms:
            style, color = _PERCENTILE_STYLES.get(percentile, ("-.", "C2"))
            panel.plot(
                [row.concurrency for row in ordered],
                [row.latency_ms[percentile] for row in ordered],
                style,
                marker="o",
                color=color,
                label=percentile,
            )
        _concurrency_axis(panel, [row.concurrency for row in ordered])
        panel.set_yscale("log")
        panel.yaxis.set_major_locator(LogLocator(subs=(1, 2, 5)))
        panel.yaxis.set_major_formatter(ScalarFormatter())
        panel.yaxis.set_minor_formatter(NullFormatter())
        panel.set_title(name, fontsize="medium")
        panel.legend(fontsize="small")
    for panel in panels:  # the grid's cells past the last series
        panel.set_visible(False)
    figure.supylabel("latency, ms (log scale)")
    figure.suptitle(f"{subject}: latency percentiles")
    return figure


def table_series(markdown: str) -> dict[str, list[Row]]:
    """The rows of the first table in `markdown` whose columns include images/s and latency
    percentiles ("p50 ms", ...): its first column names the series, its second the concurrency."""
    lines = iter(markdown.splitlines())
    for line in lines:
        header = _cells(line)
        if "images/s" in header and any(re.fullmatch(r"p\d+ ms", cell) for cell in header):
            break
    else:
        raise ValueError("no table of images/s and latency percentiles")
    next(lines)  # |---|---|
    percentiles = {
        cell.split()[0]: i for i, cell in enumerate(header) if re.fullmatch(r"p\d+ ms", cell)
    }
    series: dict[str, list[Row]] = {}
    for line in lines:
        cells = _cells(line)
        if not cells:
            break
        series.setdefault(cells[0], []).append(
            Row(
                int(cells[1]),
                float(cells[header.index("images/s")]),
                {name: float(cells[i]) for name, i in percentiles.items()},
            )
        )
    return series


def _cells(line: str) -> list[str]:
    line = line.strip()
    return [cell.strip() for cell in line.strip("|").split("|")] if line.startswith("|") else []


def section(key: str, text: str) -> str:
    """The section of docs/benchmarks.md that the script owning `key` wrote."""
    return text.split(f"<!-- begin {key} -->", 1)[1].split(f"<!-- end {key} -->", 1)[0]


# The sections with charts, and what each measures.
SUBJECTS = {
    "server_load": "ResNet50 under gunicorn",
    "server_protocols": "MobileNetV2, by protocol",
}


def main() -> None:
    text = BENCHMARKS_MD.read_text()
    for key, subject in SUBJECTS.items():
        concurrency_charts(key, subject, table_series(section(key, text)))
        print(f"redrew the charts of {key} from {BENCHMARKS_MD}")


if __name__ == "__main__":
    main()
