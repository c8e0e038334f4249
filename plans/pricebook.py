"""Price books: which price applies to an account's usage of a model at an instant (pure).

Three price books, tried in this order by :func:`resolve_price`:

1. **Contract** (:class:`Contract`), when in force at the instant and covering the model: a
   locked rate-card version (or, without one, the list card in force) with per-model discount
   percentages and an optional discount for all other models.
2. **Reseller retail** (:class:`ResellerRetail`), for sub-accounts of a reseller: an explicit
   per-model :class:`~plans.prices.ModelPrice` override, else a markup percentage over the
   wholesale price (what the reseller pays: its own contract, else the list card).
3. **List**: the rate card in force (:func:`card_in_force`).

The result, :class:`ResolvedPrice`, says which book was used and from which card the prices
derive, so it can be stored on the usage record. For reseller sub-accounts it also carries the
wholesale price, which is drawn from the reseller's float in the same transaction.

All percentages are exact ``Decimal`` s (<= 2 decimals) applied through ``Fraction``; a
discounted or marked-up price that would not rate exactly raises
:class:`~plans.errors.InvalidPrice` when it is built, never rounds.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from types import MappingProxyType

from ledger.units import Unit
from plans._exact import DecimalInput, is_aware
from plans.errors import InvalidCatalog, InvalidUsage, NoRateInForce
from plans.price_fields import MAX_MARKUP_PCT, parse_pct
from plans.prices import ModelPrice, RateCard, price_for


class PriceSource(StrEnum):
    """Which price book priced a usage record (stored on the record)."""

    CONTRACT = "contract"
    RESELLER_RETAIL = "reseller_retail"
    LIST = "list"


def _aware_or_none(value: datetime | None, what: str, owner: str) -> None:
    if value is not None and (not isinstance(value, datetime) or not is_aware(value)):
        raise InvalidCatalog(f"{owner}: {what} must be a timezone-aware datetime")


def _freeze_pcts(raw: Mapping[str, DecimalInput], owner: str) -> Mapping[str, Decimal]:
    pcts: dict[str, Decimal] = {}
    for model, pct in raw.items():
        if not isinstance(model, str) or not model:
            raise InvalidCatalog(f"{owner}: discount model ids must be non-empty strings")
        pcts[model] = parse_pct(pct, what=f"discount_pct for {model}")
    return MappingProxyType(pcts)


@dataclass(frozen=True, slots=True)
class Contract:
    """An account's negotiated price book.

    In force for ``starts_at <= at < ends_at`` (``ends_at`` exclusive; ``None`` = unbounded on
    that side). It covers a model when its locked ``card`` prices it; without a locked card it
    discounts the list card in force (this is how an account's standing ``discounts`` from the
    API are expressed). Per-model discounts replace (do not stack with) ``all_models_discount_pct``.
    The contract discount stacks multiplicatively with a batch discount.

    Attributes:
        id: the contract's id (stored on usage records as ``source_id``).
        card: the locked rate-card version, or ``None`` to discount the list price.
        starts_at: first instant in force (inclusive), or ``None``.
        ends_at: end of the term (exclusive), or ``None``.
        discounts_pct: model id -> percent off (0..100, <= 2 decimals), read-only.
        all_models_discount_pct: percent off models without their own discount, or ``None``.

    Raises:
        InvalidCatalog: naive datetimes, ``ends_at <= starts_at``, a discount for a model the
            locked card does not price, or a contract that neither locks a card nor discounts.
        InvalidPrice: a bad percentage, or (with a locked card) a discounted price that would
            not rate exactly; so a bad contract is refused when it is created.
    """

    id: str
    card: RateCard | None = None
    starts_at: datetime | None = None
    ends_at: datetime | None = None
    discounts_pct: Mapping[str, DecimalInput] = field(default_factory=dict)
    all_models_discount_pct: DecimalInput | None = None

    def __post_init__(self) -> None:
        """Check the term and the discounts, and that a locked card rates exactly."""
        if not isinstance(self.id, str) or not self.id:
            raise InvalidCatalog("a contract needs a non-empty id")
        owner = f"contract {self.id}"
        _aware_or_none(self.starts_at, "starts_at", owner)
        _aware_or_none(self.ends_at, "ends_at", owner)
        if (
            self.starts_at is not None
            and self.ends_at is not None
            and self.ends_at <= self.starts_at
        ):
            raise InvalidCatalog(f"{owner}: ends_at must be after starts_at")
        if self.card is not None and not isinstance(self.card, RateCard):
            raise InvalidCatalog(f"{owner}: card must be a RateCard")
        object.__setattr__(self, "discounts_pct", _freeze_pcts(self.discounts_pct, owner))
        if self.all_models_discount_pct is not None:
            object.__setattr__(
                self,
                "all_models_discount_pct",
                parse_pct(self.all_models_discount_pct, what="all_models_discount_pct"),
            )
        if self.card is None and not self.discounts_pct and self.all_models_discount_pct is None:
            raise InvalidCatalog(f"{owner} neither locks a rate card nor grants a discount")
        if self.card is not None:
            unpriced = sorted(set(self.discounts_pct) - set(self.card.prices))
            if unpriced:
                raise InvalidCatalog(
                    f"{owner}: discounts for {unpriced}, which locked card {self.card.id} "
                    "does not price"
                )
            for model in self.card.prices:  # refuse a contract that cannot rate exactly
                self.price_on(self.card, model)

    def __hash__(self) -> int:
        """Hash by id (the discounts mapping is not hashable)."""
        return hash(("contract", self.id))

    def in_force(self, at: datetime) -> bool:
        """True when ``starts_at <= at < ends_at`` (missing bounds are open)."""
        return (self.starts_at is None or self.starts_at <= at) and (
            self.ends_at is None or at < self.ends_at
        )

    def discount_pct_for(self, model: str) -> Decimal:
        """The percent off for ``model``: its own discount, else the all-models one, else 0."""
        own = self.discounts_pct.get(model)
        if own is not None:
            return Decimal(own)
        if self.all_models_discount_pct is not None:
            return Decimal(self.all_models_discount_pct)
        return Decimal(0)

    def price_on(self, card: RateCard, model: str) -> ModelPrice:
        """``model`` 's price on ``card`` with this contract's discount applied.

        Raises:
            UnknownModel: the card does not price ``model``.
            InvalidPrice: the discounted price would not rate exactly.
        """
        base = price_for(card, model)
        pct = self.discount_pct_for(model)
        return base if pct == 0 else base.with_discount(pct)


@dataclass(frozen=True, slots=True)
class ResellerRetail:
    """A reseller's retail price book for its sub-accounts.

    For a model, an explicit ``overrides`` entry wins; otherwise ``markup_pct`` is added to
    the wholesale price; with neither, the model falls through to the list price. The
    wholesale price is what the reseller pays the operator: ``wholesale_contract`` (the
    reseller's own contract) when in force and covering the model, else the list card.

    Attributes:
        id: the retail price book's id (stored on usage records as ``source_id``).
        currency: currency of the overrides; must equal the wholesale currency (no FX).
        markup_pct: percent over wholesale (>= 0, <= 2 decimals), or ``None``.
        overrides: model id -> explicit retail :class:`ModelPrice`, read-only.
        wholesale_contract: the reseller's contract with the operator, or ``None``.

    Raises:
        InvalidCatalog: empty id, a non-currency unit, bad override entries, or neither a
            markup nor any override.
        InvalidPrice: a bad markup percentage.
    """

    id: str
    currency: Unit
    markup_pct: DecimalInput | None = None
    overrides: Mapping[str, ModelPrice] = field(default_factory=dict)
    wholesale_contract: Contract | None = None

    def __post_init__(self) -> None:
        """Check the markup and the overrides; a book needs one of them."""
        if not isinstance(self.id, str) or not self.id:
            raise InvalidCatalog("a reseller retail price book needs a non-empty id")
        owner = f"reseller retail {self.id}"
        if not isinstance(self.currency, Unit) or not self.currency.is_currency:
            raise InvalidCatalog(f"{owner}: currency must be a currency unit")
        overrides = dict(self.overrides)
        for model, price in overrides.items():
            if not isinstance(model, str) or not model or not isinstance(price, ModelPrice):
                raise InvalidCatalog(f"{owner}: overrides map model ids to ModelPrice values")
        object.__setattr__(self, "overrides", MappingProxyType(overrides))
        if self.markup_pct is not None:
            object.__setattr__(
                self,
                "markup_pct",
                parse_pct(self.markup_pct, what="markup_pct", maximum=MAX_MARKUP_PCT),
            )
        if self.markup_pct is None and not overrides:
            raise InvalidCatalog(f"{owner} has neither a markup nor any override")
        if self.wholesale_contract is not None and not isinstance(
            self.wholesale_contract, Contract
        ):
            raise InvalidCatalog(f"{owner}: wholesale_contract must be a Contract")

    def __hash__(self) -> int:
        """Hash by id (the overrides mapping is not hashable)."""
        return hash(("reseller_retail", self.id))


@dataclass(frozen=True, slots=True)
class ResolvedPrice:
    """The price that applies, and where it came from (stored on the usage record).

    Attributes:
        model: the model priced.
        price: the effective per-Mtok prices (discount or markup already applied).
        currency: the currency of ``price``.
        source: which price book was used.
        source_id: the contract id, reseller retail id, or list card id.
        card_id: the rate-card version the prices derive from (the locked or list card; for
            a markup, the wholesale card); ``None`` for an explicit reseller override.
        discount_pct: contract discount applied (0 when none).
        markup_pct: reseller markup applied (0 when none).
        wholesale: for a reseller sub-account, the reseller's own resolved price (what its
            float is drawn at); ``None`` otherwise.
    """

    model: str
    price: ModelPrice
    currency: Unit
    source: PriceSource
    source_id: str
    card_id: str | None
    discount_pct: Decimal = Decimal(0)
    markup_pct: Decimal = Decimal(0)
    wholesale: ResolvedPrice | None = None


def card_in_force(cards: Iterable[RateCard], at: datetime) -> RateCard:
    """The card in force at ``at``: the greatest ``effective_from`` that is ``<= at``.

    A card whose ``effective_from`` equals ``at`` is in force at ``at``. Instants compare
    as instants, whatever their UTC offsets.

    Args:
        cards: candidate cards (any order), normally all of one currency.
        at: aware instant, e.g. a usage record's ``occurred_at``.

    Returns:
        The card in force.

    Raises:
        InvalidUsage: ``at`` is naive.
        NoRateInForce: no card has taken effect by ``at`` (or there are no cards).
        InvalidCatalog: two candidate cards share the winning ``effective_from``.
    """
    if not isinstance(at, datetime) or not is_aware(at):
        raise InvalidUsage("the pricing instant must be a timezone-aware datetime")
    best: RateCard | None = None
    tied: RateCard | None = None
    for card in cards:
        if card.effective_from > at:
            continue
        if best is None or card.effective_from > best.effective_from:
            best, tied = card, None
        elif card.effective_from == best.effective_from and card.id != best.id:
            tied = card
    if best is None:
        raise NoRateInForce(f"no rate card is in force at {at.isoformat()}", at=at.isoformat())
    if tied is not None:
        raise InvalidCatalog(
            f"rate cards {best.id} and {tied.id} both take effect at "
            f"{best.effective_from.isoformat()}"
        )
    return best


def _single_currency(cards: tuple[RateCard, ...]) -> Unit | None:
    currencies = {card.currency for card in cards}
    if len(currencies) > 1:
        codes = sorted(c.code for c in currencies)
        raise InvalidCatalog(f"list cards mix currencies {codes}; pass the account currency's")
    return next(iter(currencies), None)


def _check_currency(expected: Unit | None, got: Unit, what: str) -> None:
    if expected is not None and got != expected:
        raise InvalidCatalog(f"{what} is in {got.code} but the account prices in {expected.code}")


def _from_contract(
    model: str,
    at: datetime,
    cards: tuple[RateCard, ...],
    contract: Contract,
    list_currency: Unit | None,
) -> ResolvedPrice | None:
    if not contract.in_force(at):
        return None
    if contract.card is not None:
        _check_currency(list_currency, contract.card.currency, f"contract {contract.id}")
        if model not in contract.card.prices:
            return None  # models newer than the locked card are not covered
        card = contract.card
    else:
        card = card_in_force(cards, at)
    return ResolvedPrice(
        model=model,
        price=contract.price_on(card, model),
        currency=card.currency,
        source=PriceSource.CONTRACT,
        source_id=contract.id,
        card_id=card.id,
        discount_pct=contract.discount_pct_for(model),
    )


def resolve_price(
    model: str,
    at: datetime,
    *,
    list_cards: Iterable[RateCard],
    contract: Contract | None = None,
    reseller_retail: ResellerRetail | None = None,
) -> ResolvedPrice:
    """The effective price of ``model`` for an account at ``at``.

    Order: the account's ``contract`` (if in force at ``at`` and covering the model) →
    ``reseller_retail`` (override, else markup over wholesale) → the list card in force.

    Args:
        model: the model id.
        at: aware instant the usage occurred (``occurred_at``).
        list_cards: the operator's list rate cards in the account's currency (all versions;
            the one in force is chosen here).
        contract: the account's own contract, if any.
        reseller_retail: the parent reseller's retail price book, for a sub-account.

    Returns:
        The resolved price; for a sub-account (``reseller_retail`` given) ``wholesale`` holds
        the reseller's price even when the sub-account's own contract won.

    Raises:
        InvalidUsage: ``at`` is naive.
        NoRateInForce: a list card is needed and none is in force at ``at``.
        UnknownModel: the price book that applies does not price ``model`` (for a
            sub-account also when the operator has no wholesale price for it).
        InvalidCatalog: cards or price books in different currencies, or tied cards.
        InvalidPrice: a discount or markup that would not rate exactly.
    """
    if not isinstance(at, datetime) or not is_aware(at):
        raise InvalidUsage("the pricing instant must be a timezone-aware datetime")
    cards = tuple(list_cards)
    list_currency = _single_currency(cards)

    wholesale = None if reseller_retail is None else _wholesale(model, at, cards, reseller_retail)

    if contract is not None:
        resolved = _from_contract(model, at, cards, contract, list_currency)
        if resolved is not None:
            return _with_wholesale(resolved, wholesale)

    if reseller_retail is not None and wholesale is not None:
        retail = _from_retail(model, reseller_retail, wholesale)
        if retail is not None:
            return retail

    card = card_in_force(cards, at)
    return ResolvedPrice(
        model=model,
        price=price_for(card, model),
        currency=card.currency,
        source=PriceSource.LIST,
        source_id=card.id,
        card_id=card.id,
        wholesale=wholesale,
    )


def _wholesale(
    model: str, at: datetime, cards: tuple[RateCard, ...], retail: ResellerRetail
) -> ResolvedPrice:
    """What the reseller pays for ``model``: its own contract's price, else list."""
    wholesale = resolve_price(model, at, list_cards=cards, contract=retail.wholesale_contract)
    _check_currency(wholesale.currency, retail.currency, f"reseller retail {retail.id}")
    return wholesale


def _from_retail(
    model: str, retail: ResellerRetail, wholesale: ResolvedPrice
) -> ResolvedPrice | None:
    """The reseller's retail price of ``model``, or ``None`` (the sub-account pays list).

    Its override, else its markup over ``wholesale``; ``None`` when the book has neither.
    """
    override = retail.overrides.get(model)
    if override is not None:
        return ResolvedPrice(
            model=model,
            price=override,
            currency=retail.currency,
            source=PriceSource.RESELLER_RETAIL,
            source_id=retail.id,
            card_id=None,
            wholesale=wholesale,
        )
    if retail.markup_pct is None:
        return None
    markup = Decimal(retail.markup_pct)
    return ResolvedPrice(
        model=model,
        price=wholesale.price.with_markup(markup),
        currency=wholesale.currency,
        source=PriceSource.RESELLER_RETAIL,
        source_id=retail.id,
        card_id=wholesale.card_id,
        markup_pct=markup,
        wholesale=wholesale,
    )


def _with_wholesale(resolved: ResolvedPrice, wholesale: ResolvedPrice | None) -> ResolvedPrice:
    if wholesale is None:
        return resolved
    _check_currency(wholesale.currency, resolved.currency, f"contract {resolved.source_id}")
    return replace(resolved, wholesale=wholesale)
