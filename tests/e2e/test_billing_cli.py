"""The finance CLI.

``tokenwallet billing close`` with its progress bar, reports as CSV and JSON, and an invoice's PDF,
against this test's database.
"""

from __future__ import annotations

import json

import pytest

from api.cli import app
from tests.integration.invoicing.conftest import MAR, Usage, at, new_account, stock_shop


@pytest.fixture
def shop(session_factory):
    stock_shop(session_factory)
    return session_factory


@pytest.fixture
def usage(session_factory) -> Usage:
    return Usage(session_factory)


def test_close_reports_and_pdf_from_the_command_line(cli, shop, usage, tmp_path):
    postpaid = new_account(shop, "Initech", credit_limit="10")
    assert usage(postpaid, at(3), count=2) == ["charged", "charged"]  # 0.036 overage
    result = cli.invoke(app, ["billing", "close", str(MAR)])
    assert result.exit_code == 0, result.output
    assert "2026-03 closed: 1 invoices for 1 billing accounts" in result.output
    again = cli.invoke(app, ["billing", "close", str(MAR)])
    assert again.exit_code == 0 and "1 invoices" in again.output
    bad = cli.invoke(app, ["billing", "close", "2026-3"])
    assert bad.exit_code == 2 and "YYYY-MM" in bad.output
    tb = cli.invoke(app, ["reports", "trial-balance", "--currency", "USD", "--format", "csv"])
    assert tb.exit_code == 0, tb.output
    assert tb.output.splitlines()[0] == "book,code,type,debits,credits,balance"
    assert "operator,receivable:invoiced,asset,0.04,0.00,0.04" in tb.output
    roll = cli.invoke(
        app, ["reports", "prepaid-liability", "--period", "2026-03", "--currency", "USD"]
    )
    assert roll.exit_code == 0 and json.loads(roll.output)["summary"]["ties"] is True
    aging = cli.invoke(app, ["reports", "receivables-aging", "--currency", "USD"])
    assert json.loads(aging.output)["summary"]["total"] == "0.04"
    from sqlalchemy import select

    from invoicing.models import Invoice

    with shop() as s:
        invoice_id = s.scalars(select(Invoice.id)).one()
    out = tmp_path / "invoice.pdf"
    pdf = cli.invoke(app, ["billing", "pdf", invoice_id, "--output", str(out)])
    assert pdf.exit_code == 0, pdf.output
    assert out.read_bytes().startswith(b"%PDF")


def test_a_pdf_of_an_unknown_invoice_is_one_line_and_exit_2(cli):
    missing = cli.invoke(app, ["billing", "pdf", "inv_missing"])
    assert missing.exit_code == 2
    assert missing.output.strip() == "error: invoice inv_missing does not exist"
