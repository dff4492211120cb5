"""docs/benchmarks.md's charts (bench/plots.py): embedded where the scripts put them, and drawn
from the figures in its tables, so a picture never tells another story than the table above it."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.append(str(Path(__file__).resolve().parents[1] / "bench"))

from plots import SUBJECTS, Row, concurrency_charts, section, table_series

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("key", SUBJECTS)
def test_the_charts_are_the_tables_figures(repo_root: Path, tmp_path: Path, key: str) -> None:
    docs = repo_root / "docs"
    written = section(key, (docs / "benchmarks.md").read_text())
    series = table_series(written)
    assert len(series) == 4 and all(len(rows) >= 2 for rows in series.values())
    embedded = concurrency_charts(key, SUBJECTS[key], series, tmp_path)
    assert embedded in written
    for drawn in tmp_path.iterdir():
        assert drawn.read_bytes() == (docs / drawn.name).read_bytes(), drawn.name


def test_a_table_reads_back_as_the_rows_it_was_written_from() -> None:
    table = """Some text.

| server | clients | images/s | p50 ms | p95 ms | errors |
|---|---|---|---|---|---|
| a | 1 | 7.65 | 130 | 158 | 0 |
| a | 4 | 9.32 | 429 | 516 | 0 |
| b | 1 | 4.37 | 228 | 251 | 0 |

After it."""
    assert table_series(table) == {
        "a": [Row(1, 7.65, {"p50": 130, "p95": 158}), Row(4, 9.32, {"p50": 429, "p95": 516})],
        "b": [Row(1, 4.37, {"p50": 228, "p95": 251})],
    }
    with pytest.raises(ValueError, match="no table"):
        table_series("| a | b |\n|---|---|\n| 1 | 2 |")


def test_the_charts_are_pngs_the_markdown_names(tmp_path: Path) -> None:
    rows = [Row(1, 10.0, {"p50": 20.0, "p99": 30.0}), Row(16, 40.0, {"p50": 300.0, "p99": 420.0})]
    embedded = concurrency_charts("demo", "Demo", {"x": rows, "y": rows, "z": rows}, tmp_path)
    names = sorted(path.name for path in tmp_path.iterdir())
    assert names == ["benchmarks-demo-latency.png", "benchmarks-demo-throughput.png"]
    assert all(f"]({name})" in embedded for name in names)
    assert all((tmp_path / name).read_bytes().startswith(PNG) for name in names)
