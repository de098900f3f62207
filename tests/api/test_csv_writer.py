"""api.csv_writer: formula cells neutralised, numbers left numbers, the only CSV writer."""

import csv
import io
import re
from decimal import Decimal
from pathlib import Path

import pytest

from api import csv_writer

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ("portal", "billing", "metering")

FORMULAS = ['=HYPERLINK("http://x")', "+1", "-2+3", "@SUM(A1)", "\tx", "\rx", "-", "=", "-1e5", "- 1", "+1.50"]


def written(row: list) -> str:
    buffer = io.StringIO()
    csv_writer.writer(buffer, lineterminator="\r\n").writerow(row)
    return buffer.getvalue()


@pytest.mark.parametrize("text", FORMULAS)
def test_text_starting_a_formula_gets_a_quote(text):
    assert csv_writer.neutralise(text) == "'" + text
    (cell,) = next(csv.reader(io.StringIO(written([text]))))
    assert cell == "'" + text


@pytest.mark.parametrize("value", ["-1.50", "-0.000000000000000001", "0", "12", "-3", "5.01", "x=1", "a-b", "", " =1"])
def test_plain_numbers_and_harmless_text_stay(value):
    assert csv_writer.neutralise(value) == value


@pytest.mark.parametrize("value", [-1, 0, 7, Decimal("-1.50"), Decimal("-1E+5"), None])
def test_non_text_values_stay(value):
    assert csv_writer.neutralise(value) is value


def test_row_is_quoted_as_usual_and_deterministic():
    row = ["invoice", '=HYPERLINK("http://x")', "-1.50", Decimal("-2.25"), 3, "a,b", "\rx"]
    line = written(row)
    assert line == """invoice,"'=HYPERLINK(""http://x"")",-1.50,-2.25,3,"a,b","'\rx"\r\n"""
    assert written(row) == line
    assert next(csv.reader(io.StringIO(line))) == [
        "invoice", "'=HYPERLINK(\"http://x\")", "-1.50", "-2.25", "3", "a,b", "'\rx",
    ]  # fmt: skip


def test_writerows_and_streaming_sink():
    class Echo:
        def write(self, value: str) -> str:
            return value

    assert csv_writer.writer(Echo()).writerow(["@x", 1]) == "'@x,1\r\n"
    buffer = io.StringIO()
    csv_writer.writer(buffer).writerows([["+a"], ["-1"]])
    assert buffer.getvalue() == "'+a\r\n-1\r\n"


def test_every_csv_in_the_product_goes_through_the_helper():
    """No module but the helper builds a csv.writer or DictWriter: new exports cannot forget it."""
    direct = re.compile(r"csv\.(writer|DictWriter)\(|from csv import .*\b(writer|DictWriter)\b")
    offenders = [
        str(path.relative_to(ROOT))
        for package in PRODUCT
        for path in (ROOT / package).rglob("*.py")
        if path != ROOT / "portal" / "api" / "csv_writer.py" and direct.search(path.read_text("utf-8"))
    ]
    assert offenders == []
