"""Report helpers shared by every study: Markdown tables, figures with intervals, pages.

Pages are generated from records only, so that they regenerate byte for byte;
nothing here reads the clock or the machine.
"""

import math
from pathlib import Path


def markdown_table(header, rows):
    """Lines of a Markdown table: a header row, the rule, one line per row."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return lines


def fmt_interval(mean, low, high, scale=100.0, digits=2):
    """`+1.23 [+0.45, +2.01]`: a difference and its interval, scaled (points by default)."""
    if any(math.isnan(v) for v in (mean, low, high)):
        return "-" if math.isnan(mean) else f"{scale * mean:+.{digits}f}"
    return f"{scale * mean:+.{digits}f} [{scale * low:+.{digits}f}, {scale * high:+.{digits}f}]"


def fmt_diff(mean, half, scale=100.0, digits=2):
    """`+1.23 [+0.45, +2.01]` from a mean and a symmetric half-width."""
    if math.isnan(half):
        return fmt_interval(mean, math.nan, math.nan, scale, digits)
    return fmt_interval(mean, mean - half, mean + half, scale, digits)


def shown_path(path, root):
    """`path` relative to the repository `root` where it lies inside it."""
    path = Path(path).resolve()
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def write_page(path, lines):
    """Writes a generated page: its lines joined by newlines (a final "" gives a last newline)."""
    Path(path).write_text("\n".join(lines))
    print(f"wrote {path}")
