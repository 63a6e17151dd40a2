"""The one table printer of the listings: a header of titles, then a line per row, each
cell formatted to its column's width (the columns users' scripts cut by)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Column:
    title: str
    width: int | None = None  # None: as wide as the text (the last column)
    right: bool = False  # right-aligned (numbers)
    spec: str = ""  # the cells' format after the width, e.g. ".1f"


def print_table(columns: Sequence[Column], rows: Iterable[Sequence[Any]]) -> None:
    print(" ".join(format(c.title, _align(c)) for c in columns))
    for row in rows:
        print(" ".join(format(v, _align(c) + c.spec) for c, v in zip(columns, row)))


def print_listing(
    rows: list[dict[str, Any]],
    as_json: bool,
    columns: Sequence[Column],
    cells: Callable[[dict[str, Any]], Sequence[Any]],
) -> None:
    """A listing as `--json` gives it (the rows as they are) or as a table of cells."""
    if as_json:
        print(json.dumps(rows, indent=2))
    else:
        print_table(columns, (cells(row) for row in rows))


def _align(column: Column) -> str:
    if column.width is None:
        return ""
    return f"{'>' if column.right else ''}{column.width}"


def utc(timestamp: float) -> str:
    """A UNIX time as the listings show it (UTC, to the second)."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(timestamp))
