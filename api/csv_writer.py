"""The one CSV writer every export uses: the csv module, with formula cells neutralised.

Spreadsheets (Excel, LibreOffice, Sheets) run a cell that starts with `=`, `+`, `-` or `@` as a
formula, and treat a leading tab or carriage return the same way; key names, request ids,
models and tenant names are chosen by customers, so a cell like `=HYPERLINK("http://x")` would
run on a finance desk. OWASP's rule, applied here to every cell of every row:

- a text cell (a `str`) that starts with `=`, `+`, `-`, `@`, `\\t` or `\\r` is written with a
  single quote `'` in front (the spreadsheet then shows it as text), and the csv module quotes
  it as it quotes any cell (a cell with `"`, `,` or a line break is wrapped in double quotes);
- a text cell that is a plain decimal number (`-?digits[.digits]`, e.g. the `-1.50` of a credit
  note's amount, `0.000000000000000001`) is left alone: it is a number, not a formula, and
  amounts must stay numeric for the people summing them;
- anything that is not a `str` (int, Decimal, None) is left alone: the csv module writes its
  `str()`, which is a number or empty.

A value like `+1`, `-2+3` or `-1e5` is not a plain decimal number, so it is neutralised. The
rule is a pure function of the cell, so the same data still gives the same bytes.
"""

import csv
import re
from collections.abc import Iterable
from typing import Any

FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")
_PLAIN_NUMBER = re.compile(r"-?[0-9]+(?:\.[0-9]+)?")


def neutralise(value: Any) -> Any:
    """One cell as it is safe to write: text that a spreadsheet would run gets a leading `'`."""
    if isinstance(value, str) and value.startswith(FORMULA_TRIGGERS) and not _PLAIN_NUMBER.fullmatch(value):
        return "'" + value
    return value


class SafeWriter:
    """`csv.writer` with every cell passed through `neutralise` (same return values)."""

    def __init__(self, stream: Any, **options: Any) -> None:
        self._writer = csv.writer(stream, **options)

    def writerow(self, row: Iterable[Any]) -> Any:
        return self._writer.writerow([neutralise(cell) for cell in row])

    def writerows(self, rows: Iterable[Iterable[Any]]) -> None:
        for row in rows:
            self.writerow(row)


def writer(stream: Any, **options: Any) -> SafeWriter:
    """Like `csv.writer(stream, **options)`; the only way the product writes CSV."""
    return SafeWriter(stream, **options)
