"""Each benchmark owns one section of docs/benchmarks.md and rewrites only that section, so
rerunning one benchmark keeps the others' figures."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS_MD = REPO / "docs" / "benchmarks.md"
TITLE = "# Benchmarks\n\nEach section is written by the script it names; rerun it to refresh it.\n"


def write_section(key: str, markdown: str, path: Path = BENCHMARKS_MD) -> None:
    """Replace (or append) the section marked `key` in `path`, leaving the rest as it is."""
    begin, end = f"<!-- begin {key} -->", f"<!-- end {key} -->"
    block = f"{begin}\n{markdown.strip()}\n{end}"
    text = path.read_text() if path.exists() else TITLE
    if begin in text and end in text:
        before, rest = text.split(begin, 1)
        after = rest.split(end, 1)[1]
        text = before + block + after
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
