"""The report type every finance report returns, and its money formatting."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from typing import Any

from ledger.amounts import Amount
from ledger.units import Unit


@dataclass(frozen=True, slots=True)
class Report:
    """A report: named columns, rows of plain values and a summary with its checks.

    Money as decimal strings.
    """

    name: str
    columns: list[str]
    rows: list[dict[str, Any]]
    summary: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """``{"report", "columns", "rows", "summary"}``."""
        return {
            "report": self.name,
            "columns": self.columns,
            "rows": self.rows,
            "summary": self.summary,
        }

    def to_csv(self) -> str:
        """The rows as CSV with a header line (the summary is not part of the CSV)."""
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=self.columns, lineterminator="\n")
        writer.writeheader()
        for row in self.rows:
            writer.writerow({k: row.get(k, "") for k in self.columns})
        return out.getvalue()


def fmt(atoms: int, unit: Unit) -> str:
    """Atoms of ``unit`` as a decimal string (the report's money format)."""
    return Amount(int(atoms), unit).format()
