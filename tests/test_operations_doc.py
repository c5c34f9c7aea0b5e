"""docs/operations.md names the metric labels and the options the server really has."""

from __future__ import annotations

import re

from kraken.config import options
from kraken.errors import ERROR_KINDS
from kraken.sessions import CloseReason
from kraken_testing import ROOT

DOC = (ROOT / "docs/operations.md").read_text()


def _labels(metric: str) -> set[str]:
    row = next(line for line in DOC.splitlines() if line.startswith(f"| `{metric}"))
    return set(re.findall(r"`([a-z_]+)`", row.split("|")[3]))


def test_the_disconnect_reasons_listed_are_the_metric_labels():
    assert _labels("kraken_disconnects_total") == {r.name.lower() for r in CloseReason}


def test_the_error_kinds_listed_are_the_metric_labels():
    assert _labels("kraken_protocol_errors_total") == set(ERROR_KINDS)


def test_every_option_has_a_row_in_the_options_table():
    rows = set(re.findall(r"^\| `([a-z_]+)` \|", DOC, re.M))
    assert {option.name for option in options()} <= rows
