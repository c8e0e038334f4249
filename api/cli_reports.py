"""``tokenwallet reports``: the finance reports, as JSON or CSV."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from invoicing.reports import Report

reports_app = typer.Typer(help="Finance reports (JSON or CSV)", no_args_is_help=True)


def _report(builder: Callable[[Session], Report], fmt: str, output: str) -> None:
    """Run a report builder ``builder(session)`` and print or write it as JSON or CSV."""
    import json
    from pathlib import Path

    from sqlalchemy.orm import Session

    from api.cli import _disposing, _fail, _migrated_engine

    if fmt not in ("json", "csv"):
        raise _fail("--format is json or csv")

    with _disposing(_migrated_engine()) as engine, Session(engine) as session:
        session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
        report = builder(session)
    text = report.to_csv() if fmt == "csv" else json.dumps(report.to_json(), indent=2) + "\n"
    if output:
        Path(output).write_text(text)
        typer.echo(f"wrote {output}", err=True)
    else:
        typer.echo(text, nl=False)


FormatOpt = Annotated[str, typer.Option("--format", "-f", help="json or csv")]
OutputOpt = Annotated[str, typer.Option("--output", "-o", help="file (default: stdout)")]
PeriodOpt = Annotated[str, typer.Option(help="YYYY-MM")]
CurrencyOpt = Annotated[str, typer.Option(help="ISO 4217 code")]


@reports_app.command("trial-balance")
def report_trial_balance(
    currency: CurrencyOpt,
    as_of: Annotated[str, typer.Option(help="RFC 3339 moment (default: now)")] = "",
    fmt: FormatOpt = "json",
    output: OutputOpt = "",
) -> None:
    """Debits and credits per book and account code as of a moment; each book sums to zero."""
    from datetime import datetime

    from api.cli import _fail
    from invoicing.reports import trial_balance
    from ledger.base import utcnow

    at = datetime.fromisoformat(as_of) if as_of else utcnow()
    if at.tzinfo is None:
        raise _fail("--as-of needs an offset, e.g. 2026-12-01T00:00:00+00:00")
    _report(lambda s: trial_balance(s, currency=currency, as_of=at), fmt, output)


@reports_app.command("prepaid-liability")
def report_prepaid_liability(
    period: PeriodOpt,
    currency: CurrencyOpt,
    book: Annotated[str, typer.Option(help="operator or reseller:<id>")] = "operator",
    fmt: FormatOpt = "json",
    output: OutputOpt = "",
) -> None:
    """Prepaid credit rollforward for a month: opening + movements = closing."""
    from invoicing.periods import Period
    from invoicing.reports import prepaid_liability

    _report(
        lambda s: prepaid_liability(s, period=Period.parse(period), currency=currency, book=book),
        fmt,
        output,
    )


@reports_app.command("revenue-by-model")
def report_revenue_by_model(
    period: PeriodOpt,
    currency: CurrencyOpt,
    fmt: FormatOpt = "json",
    output: OutputOpt = "",
) -> None:
    """Usage revenue per model for a month, tied to the ledger."""
    from invoicing.periods import Period
    from invoicing.reports import revenue_by_model

    _report(
        lambda s: revenue_by_model(s, period=Period.parse(period), currency=currency), fmt, output
    )


@reports_app.command("margin")
def report_margin(
    period: PeriodOpt,
    currency: CurrencyOpt,
    group_by: Annotated[str, typer.Option(help="model, upstream, account or day")] = "model",
    fmt: FormatOpt = "json",
    output: OutputOpt = "",
) -> None:
    """Revenue, upstream cost and margin of a month's usage, tied to the ledger's revenue."""
    from invoicing.periods import Period
    from invoicing.reports import MARGIN_GROUPS, margin

    if group_by not in MARGIN_GROUPS:
        raise typer.BadParameter(f"--group-by must be one of {', '.join(MARGIN_GROUPS)}")
    _report(
        lambda s: margin(s, period=Period.parse(period), currency=currency, group_by=group_by),
        fmt,
        output,
    )


@reports_app.command("receivables-aging")
def report_receivables_aging(
    currency: CurrencyOpt,
    as_of: Annotated[str, typer.Option(help="YYYY-MM-DD (default: today)")] = "",
    fmt: FormatOpt = "json",
    output: OutputOpt = "",
) -> None:
    """Open invoices by days past due."""
    from datetime import date

    from invoicing.reports import receivables_aging
    from ledger.base import utcnow

    day = date.fromisoformat(as_of) if as_of else utcnow().date()
    _report(lambda s: receivables_aging(s, currency=currency, as_of=day), fmt, output)


@reports_app.command("reseller-statement")
def report_reseller_statement(
    reseller: Annotated[str, typer.Option(help="the reseller's account id")],
    period: PeriodOpt,
    fmt: FormatOpt = "json",
    output: OutputOpt = "",
) -> None:
    """Retail billed, wholesale charged and margin per sub-account and model."""
    from invoicing.periods import Period
    from invoicing.reports import reseller_statement

    _report(
        lambda s: reseller_statement(s, reseller_id=reseller, period=Period.parse(period)),
        fmt,
        output,
    )


@reports_app.command("sub-account-statement")
def report_sub_account_statement(
    account: Annotated[str, typer.Option(help="the sub-account's id")],
    period: PeriodOpt,
    fmt: FormatOpt = "json",
    output: OutputOpt = "",
) -> None:
    """A reseller's sub-account: overage billed, paid and open, and its payments."""
    from invoicing.periods import Period
    from invoicing.reports import sub_account_statement

    _report(
        lambda s: sub_account_statement(s, account_id=account, period=Period.parse(period)),
        fmt,
        output,
    )
