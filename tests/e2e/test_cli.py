"""``tokenwallet db check`` and ``db audit`` against this test's database."""

from __future__ import annotations

import sqlalchemy as sa

from api.cli import app
from wallet.accounts import create_account
from wallet.topups import record_topup


def test_db_check_and_audit(cli, session_factory):
    assert cli.invoke(app, ["db", "check"]).exit_code == 0
    with session_factory.begin() as s:
        acc = create_account(s, name="C", currency="USD")
        record_topup(s, acc.id, amount="5.00", method="bank_transfer")
    ok = cli.invoke(app, ["db", "audit"])
    assert ok.exit_code == 0 and "audit ok" in ok.output
    # a lot that disagrees with its ledger account is reported (lots are not ledger rows, so
    # nothing in the database stops a stray UPDATE; the audit finds it)
    with session_factory.begin() as s:
        s.execute(sa.text("UPDATE wallet_credit_lots SET remaining = remaining - 1"))
    bad = cli.invoke(app, ["db", "audit"])
    assert bad.exit_code == 1 and "customer:prepaid" in bad.output
    with session_factory.begin() as s:  # put it back for the after-test audit
        s.execute(sa.text("UPDATE wallet_credit_lots SET remaining = remaining + 1"))
