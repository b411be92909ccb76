"""Plain-text tables for the terminal, aligned by display width.

``str.ljust`` counts code points, but a terminal gives a wide or full-width character (most
CJK text) two columns and a combining mark none, so Chinese headers and user names would
push the columns out of line. Every table the CLI prints pads with these helpers instead.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence


def display_width(text: str) -> int:
    """Return the terminal columns ``text`` takes: two for wide (CJK), none for combining."""
    width = 0
    for char in text:
        if unicodedata.combining(char):
            continue
        width += 2 if unicodedata.east_asian_width(char) in "WF" else 1
    return width


def pad(text: str, width: int, *, right: bool = False) -> str:
    """Pad ``text`` with spaces to ``width`` terminal columns, on the left if ``right``."""
    padding = " " * max(0, width - display_width(text))
    return padding + text if right else text + padding


def format_table(
    headers: Sequence[str], rows: Sequence[Sequence[str]], align: str = "", *,
    rule: bool = False,
) -> str:
    """Render rows as columns separated by two spaces, without trailing spaces.

    ``align`` has one letter per column, ``l`` or ``r``, and a column without a letter is
    left-aligned. ``rule`` adds a line of dashes under the headers.
    """
    table = [[str(cell) for cell in row] for row in [headers, *rows]]
    widths = [max(display_width(cell) for cell in column)
              for column in zip(*table, strict=True)]

    def line(cells: list[str]) -> str:
        parts = [pad(cell, width, right=align[index:index + 1] == "r")
                 for index, (cell, width) in enumerate(zip(cells, widths, strict=True))]
        return "  ".join(parts).rstrip()

    lines = [line(table[0])]
    if rule:
        lines.append("  ".join("-" * width for width in widths))
    lines.extend(line(cells) for cells in table[1:])
    return "\n".join(lines)
