"""A reseller records what its customer paid for a sub-account's overage (API and CLI).

Booked in the reseller's book (``cash:collected`` / ``receivable:unbilled``), it frees the
sub-account's credit limit, and the sub-account's statement shows billed, paid and open.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from api.auth import create_key
from api.cli import app as cli_app
from api.settings import get_settings
from invoicing.periods import Period
from ledger.base import utcnow
from plans import catalog
from plans.reseller_books import create_reseller_price_book
from tests.books import assert_books_tie
from tests.helpers import ok, problem
from wallet.accounts import create_account
from wallet.charging import UsageIn, charge_batch
from wallet.normalize import Tokens
from wallet.topups import record_topup

JAN = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def tree(engine):
    """A reseller (float 100.00) whose sub-account used 20.00 of credit and 10.00 of overage.

    The sub-account is allowed 10.00 of overage; it used 1,000,000 output tokens at 15/Mtok,
    doubled by the reseller's 100 % markup: 30.00 retail.
    """
    with Session(engine) as s:
        catalog.create_model(s, id="m", provider="acme", display_name="M")
        catalog.create_rate_card(
            s,
            currency="USD",
            effective_from=JAN,
            prices=[{"model": "m", "input_per_mtok": "3", "output_per_mtok": "15"}],
        )
        reseller = create_account(s, name="R", currency="USD", kind="reseller")
        create_reseller_price_book(
            s, reseller_account_id=reseller.id, currency="USD", markup_pct="100", effective_from=JAN
        )
        sub = create_account(s, name="S", currency="USD", parent_id=reseller.id, credit_limit="10")
        other = create_account(s, name="O", currency="USD", kind="reseller")
        record_topup(s, reseller.id, amount="100.00", method="bank_transfer")
        record_topup(s, sub.id, amount="20.00", method="reseller")
        keys = {
            "reseller": create_key(s, role="reseller", account_id=reseller.id).secret,
            "other": create_key(s, role="reseller", account_id=other.id).secret,
        }
        ids = {"reseller": reseller.id, "sub": sub.id}
        s.commit()
    return {**ids, "keys": keys}


def charge(engine, sub_id: str, rid: str, output_tokens: int = 1_000_000) -> str:
    with Session(engine) as s:
        rec = UsageIn(
            id=rid,
            account_id=sub_id,
            model="m",
            occurred_at=utcnow() - timedelta(seconds=1),
            tokens=Tokens(input_tokens=0, output_tokens=output_tokens),
        )
        (r,) = charge_batch(s, [rec])
        s.commit()
        return r.status


def test_a_reseller_records_overage_paid_and_the_limit_is_free_again(tree, client, engine):
    sub = tree["sub"]
    assert charge(engine, sub, "u1") == "charged"  # 30.00 retail: 20.00 prepaid + 10.00 overage
    assert charge(engine, sub, "u2", 1000) == "rejected"  # the credit limit is used up
    hdr = {"Authorization": f"Bearer {tree['keys']['reseller']}"}
    url = f"/v1/accounts/{sub}/overage-payments"
    # bad input changes nothing
    problem(
        client.post(url, json={"amount": "10.01", "reference": "R1"}, headers=hdr),
        422,
        "payment_exceeds_owed",
    )
    problem(
        client.post(url, json={"amount": "-1", "reference": "R1"}, headers=hdr),
        400,
        "invalid_amount",
    )
    problem(
        client.post(
            f"/v1/accounts/{tree['reseller']}/overage-payments",
            json={"amount": "1.00", "reference": "R1"},
            headers=hdr,
        ),
        400,
        "validation_error",
    )
    other = {"Authorization": f"Bearer {tree['keys']['other']}"}
    problem(
        client.post(url, json={"amount": "1.00", "reference": "X"}, headers=other), 404, "not_found"
    )
    paid = ok(
        client.post(
            url,
            json={"amount": "6.00", "reference": "R1"},
            headers={**hdr, "Idempotency-Key": "k1"},
        )
    )
    assert (paid["amount"]["amount"], paid["open"]["amount"]) == ("6.00", "4.00")
    again = client.post(
        url, json={"amount": "6.00", "reference": "R1"}, headers={**hdr, "Idempotency-Key": "k1"}
    )
    assert ok(again)["id"] == paid["id"] and again.headers["Idempotent-Replayed"] == "true"
    # the same reference with another amount is a conflict
    problem(
        client.post(url, json={"amount": "5.00", "reference": "R1"}, headers=hdr),
        409,
        "idempotency_conflict",
    )
    assert charge(engine, sub, "u3", 1000) == "charged"  # 0.03 fits in the freed limit
    period = str(Period.containing(utcnow()))
    st = ok(client.get(f"/v1/accounts/{sub}/statement?period={period}", headers=hdr), 200)
    summary = st["summary"]
    assert (summary["billed"], summary["paid"], summary["open"]) == ("10.03", "6.00", "4.03")
    assert summary["ties"] is True
    assert [r["reference"] for r in st["rows"]] == ["R1"]
    with Session(engine) as s:
        assert_books_tie(s)


def test_the_cli_records_an_overage_payment(tree, engine, database_url, monkeypatch):
    sub = tree["sub"]
    assert charge(engine, sub, "u1") == "charged"
    monkeypatch.setenv("DATABASE_URL", database_url)
    get_settings.cache_clear()
    try:
        runner = CliRunner()
        args = ["accounts", "record-overage-payment", sub, "--amount", "10.00"]
        out = runner.invoke(cli_app, [*args, "--reference", "BANK-7"])
        assert out.exit_code == 0, out.output
        body = json.loads(out.output)
        assert (body["amount"]["amount"], body["open"]["amount"], body["replayed"]) == (
            "10.00",
            "0.00",
            False,
        )
        assert json.loads(runner.invoke(cli_app, [*args, "--reference", "BANK-7"]).output)[
            "replayed"
        ]
        refused = runner.invoke(cli_app, [*args[:-1], "0.01", "--reference", "BANK-8"])
        assert refused.exit_code == 2 and "payment_exceeds_owed" in refused.output
        period = str(Period.containing(utcnow()))
        st = runner.invoke(
            cli_app, ["reports", "sub-account-statement", "--account", sub, "--period", period]
        )
        summary = json.loads(st.output)["summary"]
        assert (summary["billed"], summary["paid"], summary["open"]) == ("10.00", "10.00", "0.00")
    finally:
        get_settings.cache_clear()
    with Session(engine) as s:
        assert_books_tie(s)
