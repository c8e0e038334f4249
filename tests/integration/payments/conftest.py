from __future__ import annotations

import pytest

from invoicing.payments.checkout import CheckoutUrls, start_card_payment
from invoicing.payments.events import receive_event
from plans.catalog import create_topup_bonus_rule
from tests.helpers import BONUS_TIERS
from tests.stripe_fakes import completed_session, event
from wallet.accounts import create_account

URLS = CheckoutUrls("https://shop.example/paid", "https://shop.example/cancel")


@pytest.fixture
def account_id(in_tx):
    def setup(s):
        create_topup_bonus_rule(s, currency="USD", tiers=BONUS_TIERS)
        return create_account(s, name="Buyer", currency="USD").id

    return in_tx(setup)


@pytest.fixture
def card_topup(in_tx, gateway, fake, account_id):
    """Start a card top-up; returns (payment id, topup id, completed event for it)."""

    def start(amount: str, *, pi: str):
        def run(s):
            p = start_card_payment(
                s, gateway, account_id, purpose="topup", urls=URLS, amount=amount
            )
            return p.payment.id, p.payment.topup_id, p.payment.checkout_session_id

        payment_id, topup_id, session_id = in_tx(run)
        evt = event("checkout.session.completed", completed_session(fake.sessions[session_id], pi))
        return payment_id, topup_id, evt

    return start


@pytest.fixture
def deliver(in_tx):
    def run(evt):
        return in_tx(lambda s: receive_event(s, evt))

    return run
