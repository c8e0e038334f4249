"""A bank transfer's reference credits one top-up, however many times (or ways) it is sent."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from sqlalchemy.orm import Session

from tests.integration.wallet.conftest import funded, paid_cents
from tests.integration.wallet.test_races import race
from wallet.errors import ReferenceUsed
from wallet.topups import record_topup


def test_a_bank_reference_already_recorded_is_refused_and_credits_nothing(priced: Session):
    a, b = funded(priced, None), funded(priced, None)
    record_topup(priced, a.id, amount="5.00", method="bank_transfer", reference="BANK-1")
    priced.commit()

    for account in (a, b):  # the same account or another one
        with pytest.raises(ReferenceUsed, match="BANK-1"):
            record_topup(
                priced, account.id, amount="5.00", method="bank_transfer", reference="BANK-1"
            )
        priced.rollback()

    assert (paid_cents(priced, a), paid_cents(priced, b)) == ("5.00", "0.00")


def test_a_retry_with_its_idempotency_key_returns_the_first_top_up(priced: Session):
    a = funded(priced, None)
    first = record_topup(
        priced, a.id, amount="5.00", method="bank_transfer", reference="R", idempotency_key="k"
    )
    priced.commit()
    again = record_topup(
        priced, a.id, amount="5.00", method="bank_transfer", reference="R", idempotency_key="k"
    )
    assert (again.replayed, again.topup.id) == (True, first.topup.id)
    assert paid_cents(priced, a) == "5.00"


def test_concurrent_top_ups_of_one_bank_reference_credit_once(priced: Session, session_factory):
    accounts = [funded(priced, None) for _ in range(4)]

    def credit(account_id: str) -> Callable[[Session], str]:
        def job(s: Session) -> str:
            record_topup(s, account_id, amount="2.00", method="bank_transfer", reference="WIRE-9")
            return "credited"

        return job

    outcomes = race(session_factory, [credit(a.id) for a in accounts for _ in range(2)])

    assert outcomes == {"credited": 1, "ReferenceUsed": 7}
    assert sorted(paid_cents(priced, a) for a in accounts) == ["0.00", "0.00", "0.00", "2.00"]


def test_references_of_other_methods_and_missing_references_are_not_unique(priced: Session):
    a = funded(priced, None)
    for _ in range(2):
        record_topup(priced, a.id, amount="1.00", method="bank_transfer")
    priced.commit()
    assert paid_cents(priced, a) == "2.00"
