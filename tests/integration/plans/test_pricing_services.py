"""Rate cards, the rating watermark, contracts, reseller price books and price resolution.

All on real PostgreSQL.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

import plans.price_fields
from ledger.errors import NotFound, UnknownUnit
from plans import catalog
from plans.errors import InvalidCatalog, InvalidPrice, NoRateInForce, UnknownModel
from plans.models import RateCardRow
from plans.pricebook import PriceSource
from tests.integration.plans.conftest import APR, EUR, FEB, JAN, MAR, USD, price

US = timedelta(microseconds=1)


def list_cards(session: Session) -> None:
    """JAN: m-large 10/30; MAR: m-large 8/24 and m-small 1/2."""
    catalog.create_rate_card(
        session, currency="USD", effective_from=JAN, prices=[price("m-large", "10", "30")]
    )
    catalog.create_rate_card(
        session,
        currency="USD",
        effective_from=MAR,
        prices=[price("m-large", "8", "24"), price("m-small", "1", "2")],
    )
    session.commit()


def test_card_stores_resolved_prices_that_a_new_default_never_changes(models, monkeypatch):
    card = catalog.create_rate_card(
        models,
        currency="usd",
        effective_from=JAN,
        prices=[price("m-large", "3.00", "15.00", batch_discount_pct="40")],
    )
    models.commit()
    assert card.id.startswith("rc_") and card.currency == USD
    monkeypatch.setattr(plans.price_fields, "CACHE_READ_MULTIPLIER", Decimal("0.5"))
    stored = catalog.get_rate_card(models, card.id).prices["m-large"]
    assert stored.cache_read_per_mtok == Decimal("0.3")
    assert stored.cache_write_5m_per_mtok == Decimal("3.75")
    assert stored.cache_write_1h_per_mtok == Decimal("6")
    assert stored.reasoning_per_mtok == Decimal("15")
    assert stored.batch_discount_pct == Decimal("40")
    assert stored == card.prices["m-large"]


def test_card_in_force_at_the_boundary_instant(models):
    list_cards(models)
    card, p = catalog.price_in_force(models, USD, "m-large", MAR - US)
    assert card.effective_from == JAN and p.input_per_mtok == Decimal("10")
    card, p = catalog.price_in_force(models, "USD", "m-large", MAR)
    assert card.effective_from == MAR and p.input_per_mtok == Decimal("8")
    with pytest.raises(NoRateInForce):
        catalog.price_in_force(models, USD, "m-large", JAN - US)
    with pytest.raises(UnknownModel):
        catalog.price_in_force(models, USD, "m-small", FEB)  # not on the JAN card
    assert [c.effective_from for c in catalog.load_rate_cards(models, USD)] == [JAN, MAR]
    assert catalog.load_rate_cards(models, EUR) == []
    assert [c.effective_from for c in catalog.list_rate_cards(models, currency="USD").items] == [
        JAN,
        MAR,
    ]


def test_bad_cards_are_refused_and_write_nothing(models):
    cases = [
        ({"currency": "XYZ"}, UnknownUnit, "unknown or unsupported currency"),
        ({"prices": [price("m-nope", "1", "2")]}, UnknownModel, "not in the catalog"),
        ({"prices": [price("m-large", "-1", "2")]}, InvalidPrice, "must not be negative"),
        ({"prices": [price("m-large", "1.0000001", "2")]}, InvalidPrice, "decimal places"),
        ({"prices": [price("m-large", "1", "2")] * 2}, InvalidCatalog, "priced twice"),
        ({"prices": []}, InvalidCatalog, "needs prices"),
    ]
    args = {"currency": "USD", "effective_from": JAN, "prices": [price("m-large", "1", "2")]}
    for kwargs, error, fragment in cases:
        with pytest.raises(error, match=fragment):
            catalog.create_rate_card(models, **{**args, **kwargs})
        models.rollback()
    assert models.scalar(sa.select(sa.func.count()).select_from(RateCardRow)) == 0


def test_second_card_at_the_same_instant_is_a_conflict(models):
    list_cards(models)
    with pytest.raises(catalog.CatalogConflict, match="never edited"):
        catalog.create_rate_card(
            models, currency="USD", effective_from=JAN, prices=[price("m-large", "1", "2")]
        )
    # another currency at the same instant is fine
    catalog.create_rate_card(
        models, currency="EUR", effective_from=JAN, prices=[price("m-large", "1", "2")]
    )


def test_a_card_racing_another_for_its_instant_is_a_conflict_that_says_so(models, monkeypatch):
    """Two requests can both find the instant free; the unique key refuses the later insert."""
    import plans.rate_card_versions

    list_cards(models)
    monkeypatch.setattr(plans.rate_card_versions, "refuse_taken", lambda *a, **k: None)
    with pytest.raises(catalog.CatalogConflict) as refused:
        catalog.create_rate_card(
            models, currency="USD", effective_from=JAN, prices=[price("m-large", "1", "2")]
        )
    assert str(refused.value).startswith("a rate card created at the same moment already takes")
    assert "None" not in str(refused.value)


def test_watermark_is_monotonic_and_refuses_backdated_cards_and_contracts(models):
    list_cards(models)
    assert catalog.priced_through(models, USD) is None
    assert catalog.advance_priced_through(models, USD, FEB) == FEB
    assert catalog.advance_priced_through(models, USD, JAN) == FEB  # never backwards
    models.commit()
    assert catalog.priced_through(models, "USD") == FEB
    for start in (FEB - US, FEB):  # usage at FEB itself was priced: FEB is too early as well
        with pytest.raises(catalog.BackdatedPriceChange, match="priced through 2026-02-01") as e:
            catalog.create_rate_card(
                models, currency="USD", effective_from=start, prices=[price("m-large", "1", "2")]
            )
        assert e.value.extra["priced_through_at"] == FEB.isoformat()
        models.rollback()
    with pytest.raises(catalog.BackdatedPriceChange):
        catalog.create_contract(
            models, account_id="acc_1", currency="USD", starts_at=JAN, discounts=[{"pct": "5"}]
        )
    models.rollback()
    with pytest.raises(catalog.BackdatedPriceChange):
        catalog.create_reseller_price_book(
            models, reseller_account_id="acc_r", currency="USD", markup_pct="5", effective_from=JAN
        )
    models.rollback()
    card = catalog.create_rate_card(
        models, currency="USD", effective_from=FEB + US, prices=[price("m-large", "1", "2")]
    )
    assert card.effective_from == FEB + US
    # another currency has its own watermark
    catalog.create_rate_card(
        models, currency="EUR", effective_from=JAN, prices=[price("m-large", "1", "2")]
    )


def test_a_pricing_batch_and_a_new_card_are_serialized_by_the_watermark_row(
    models, session_factory: sessionmaker[Session]
):
    list_cards(models)
    catalog.advance_priced_through(models, USD, JAN)
    models.commit()
    batch = session_factory()
    try:
        catalog.advance_priced_through(batch, USD, FEB)  # uncommitted pricing transaction
        other = session_factory()
        try:
            other.execute(sa.text("SET lock_timeout = '1s'"))
            # a batch that does not move the mark is not blocked by one that does
            assert catalog.advance_priced_through(other, USD, JAN) == JAN
            other.commit()
        finally:
            other.close()
        with session_factory() as admin:
            admin.execute(sa.text("SET lock_timeout = '100ms'"))
            with pytest.raises(sa.exc.OperationalError, match="lock timeout"):
                catalog.create_rate_card(
                    admin, currency="USD", effective_from=APR, prices=[price("m-large", "1", "2")]
                )
        batch.commit()
    finally:
        batch.close()


def test_contract_resolution_versions_and_terms(models):
    list_cards(models)
    jan_card = catalog.load_rate_cards(models, USD)[0]
    v1 = catalog.create_contract(
        models,
        account_id="acc_1",
        currency="USD",
        starts_at=JAN,
        discounts=[{"pct": "10"}, {"model": "m-large", "pct": "20"}],
    )
    v2 = catalog.create_contract(
        models,
        account_id="acc_1",
        currency="USD",
        rate_card_id=jan_card.id,
        starts_at=FEB,
        ends_at=APR,
    )
    models.commit()
    assert (v1.version, v2.version) == (1, 2)
    assert catalog.get_contract(models, v1.id).discounts == (
        catalog.ContractDiscount(None, Decimal("10")),
        catalog.ContractDiscount("m-large", Decimal("20")),
    )

    def resolve(model, at, account="acc_1"):
        return catalog.resolve_account_price(
            models, model=model, at=at, currency="USD", account_id=account
        )

    jan = resolve("m-large", JAN)  # v1: 20 % off the JAN list card
    assert (jan.source, jan.source_id, jan.discount_pct) == (PriceSource.CONTRACT, v1.id, 20)
    assert jan.price.input_per_mtok == Decimal("8")
    mar = resolve("m-large", MAR)  # v2 locks the JAN card, no discount
    assert (mar.source_id, mar.card_id, mar.price.input_per_mtok) == (v2.id, jan_card.id, 10)
    small = resolve("m-small", MAR)  # v2 supersedes v1 and its locked card lacks the model
    assert (small.source, small.price.input_per_mtok) == (PriceSource.LIST, 1)
    apr = resolve("m-large", APR)  # v2 ended: v1 again, on the MAR list card
    assert (apr.source_id, apr.price.input_per_mtok) == (v1.id, Decimal("6.4"))
    other = resolve("m-large", MAR, account="acc_2")
    assert (other.source, other.price.input_per_mtok) == (PriceSource.LIST, 8)
    assert [c.id for c in catalog.list_contracts(models, account_id="acc_1").items] == [
        v1.id,
        v2.id,
    ]


def test_contract_validation(models):
    list_cards(models)
    eur = catalog.create_rate_card(
        models, currency="EUR", effective_from=JAN, prices=[price("m-large", "1", "2")]
    )
    models.commit()
    base = {"account_id": "acc_1", "currency": "USD", "starts_at": JAN}
    cases = [
        ({"rate_card_id": "rc_missing"}, NotFound),
        ({"rate_card_id": eur.id}, InvalidCatalog),
        ({}, InvalidCatalog),  # neither a locked card nor a discount
        ({"discounts": [{"pct": "5"}, {"pct": "6"}]}, InvalidCatalog),
        ({"discounts": [{"model": "m-nope", "pct": "5"}]}, UnknownModel),
        ({"discounts": [{"pct": "101"}]}, InvalidPrice),
        ({"discounts": [{"pct": "5"}], "ends_at": JAN}, InvalidCatalog),
    ]
    for extra, error in cases:
        with pytest.raises(error):
            catalog.create_contract(models, **{**base, **extra})
        models.rollback()
    assert catalog.list_contracts(models).items == ()


def test_reseller_retail_markup_override_and_wholesale(models):
    list_cards(models)
    catalog.create_contract(
        models, account_id="acc_r", currency="USD", starts_at=JAN, discounts=[{"pct": "50"}]
    )
    book = catalog.create_reseller_price_book(
        models,
        reseller_account_id="acc_r",
        currency="USD",
        markup_pct="25",
        prices=[price("m-small", "1.50", "3")],
        effective_from=MAR,
    )
    models.commit()
    assert catalog.get_reseller_price_book(models, book.id).prices == book.prices

    def resolve(model, at):
        return catalog.resolve_account_price(
            models,
            model=model,
            at=at,
            currency="USD",
            account_id="acc_sub",
            reseller_account_id="acc_r",
        )

    marked = resolve("m-large", MAR)  # 25 % over the reseller's 50 %-off wholesale price
    assert marked.source == PriceSource.RESELLER_RETAIL and marked.markup_pct == 25
    assert marked.price.input_per_mtok == Decimal("5")
    assert marked.wholesale is not None and marked.wholesale.price.input_per_mtok == 4
    override = resolve("m-small", MAR)
    assert (override.source_id, override.price.input_per_mtok) == (book.id, Decimal("1.5"))
    before = resolve("m-large", FEB)  # no retail book yet: the sub-account pays list
    assert before.source == PriceSource.LIST and before.price.input_per_mtok == 10
    assert before.wholesale is not None and before.wholesale.source == PriceSource.CONTRACT
    assert before.wholesale.price.input_per_mtok == 5
    with pytest.raises(catalog.CatalogConflict):
        catalog.create_reseller_price_book(
            models, reseller_account_id="acc_r", currency="USD", markup_pct="1", effective_from=MAR
        )


def test_markup_that_cannot_rate_exactly_is_refused_when_created(models):
    catalog.create_rate_card(
        models, currency="USD", effective_from=JAN, prices=[price("m-large", "3.00001", "15")]
    )
    # 12.34 % off the 1.25x cache-write price, then 7.77 % on top (and the batch discount)
    # needs more than 12 decimals per Mtok
    catalog.create_contract(
        models, account_id="acc_r", currency="USD", starts_at=JAN, discounts=[{"pct": "12.34"}]
    )
    catalog.create_reseller_price_book(  # over list prices this markup is exact
        models, reseller_account_id="acc_r2", currency="USD", markup_pct="7.77"
    )
    models.commit()
    refused = r"7\.77% markup over a wholesale price would not rate exactly"
    with pytest.raises(InvalidPrice, match=refused):
        catalog.create_reseller_price_book(
            models, reseller_account_id="acc_r", currency="USD", markup_pct="7.77"
        )
    models.rollback()
    with pytest.raises(InvalidPrice, match=refused):
        catalog.create_contract(  # a contract under an existing markup
            models, account_id="acc_r2", currency="USD", discounts=[{"pct": "12.34"}]
        )
    models.rollback()
    with pytest.raises(InvalidPrice, match=refused):
        catalog.create_rate_card(  # a later list card under an existing markup
            models, currency="USD", effective_from=MAR, prices=[price("m-large", "3.000001", "15")]
        )
    models.rollback()
    with pytest.raises(InvalidCatalog, match="neither a markup nor any override"):
        catalog.create_reseller_price_book(models, reseller_account_id="acc_r", currency="USD")
    models.rollback()
    assert len(catalog.list_reseller_price_books(models).items) == 1
    assert len(catalog.list_contracts(models).items) == 1
    assert len(catalog.load_rate_cards(models, USD)) == 1


def test_the_process_price_cache_follows_every_catalog_change(models, session_factory):
    from plans.price_context import PriceContext

    def price_at(session: Session, at) -> Decimal:
        ctx = PriceContext.load(session, USD, account_ids=["acc_1"])
        return ctx.resolve(model="m-large", at=at, account_id="acc_1").price.input_per_mtok

    list_cards(models)
    assert price_at(models, FEB) == Decimal("10")  # loaded and cached
    catalog.create_contract(
        models,
        account_id="acc_1",
        currency="USD",
        starts_at=APR,
        discounts=[{"pct": "50"}],
    )
    models.commit()
    assert price_at(models, APR) == Decimal("4")  # MAR card 8, contract 50 % off
    # a change that rolls back leaves no trace, even if this process priced with it meanwhile
    with session_factory() as s:
        catalog.create_rate_card(
            s,
            currency="USD",
            effective_from=APR + timedelta(days=1),
            prices=[price("m-large", "100", "300")],
        )
        assert price_at(s, APR + timedelta(days=2)) == Decimal("50")
        s.rollback()
    assert price_at(models, APR + timedelta(days=2)) == Decimal("4")


def test_lists_page_by_id_after_the_cursor_and_a_missing_id_is_not_found(models):
    list_cards(models)
    first = catalog.list_rate_cards(models, currency="USD", limit=1)
    assert len(first.items) == 1 and first.has_more
    rest = catalog.list_rate_cards(models, currency="USD", starting_after=first.items[0].id)
    assert [c.effective_from for c in rest.items] == [MAR] and not rest.has_more
    assert catalog.list_rate_cards(models, currency="EUR").items == ()
    with pytest.raises(NotFound, match="rate card rc_none does not exist"):
        catalog.get_rate_card(models, "rc_none")
