"""``tokenwallet billing``: close a month, render an invoice PDF."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from api.settings import get_settings

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from invoicing.close import CloseResult
    from invoicing.periods import Period

billing_app = typer.Typer(help="Month end: close periods, invoice documents", no_args_is_help=True)


@billing_app.command("close")
def billing_close(
    period: Annotated[str, typer.Argument(help="the month to close, YYYY-MM")],
    draft: Annotated[
        bool, typer.Option("--draft", help="leave drafts for review instead of finalizing")
    ] = False,
) -> None:
    """Close PERIOD for every billing account: one invoice each, numbered without gaps.

    Safe to repeat and to run again after a crash.
    """
    from api.cli import _disposing, _migrated_engine
    from invoicing.periods import Period

    with _disposing(_migrated_engine(pool_size=2)) as engine:
        p = Period.parse(period)
        result = _close_with_progress(engine, p, finalize=not draft)
        _record_close(engine, p, result, finalize=not draft)
    typer.echo(
        f"{result.period} {result.status}: {len(result.invoice_ids)} invoices"
        f" for {result.accounts} billing accounts"
    )


def _close_with_progress(engine: Engine, period: Period, *, finalize: bool) -> CloseResult:
    """Close ``period`` account by account, with a progress bar on stderr.

    Returns the close's result.
    """
    from datetime import timedelta

    from rich.console import Console
    from rich.progress import Progress, TaskID

    from api.db import make_sessionmaker
    from invoicing.close import close_period

    settings = get_settings()
    with Progress(console=Console(stderr=True), transient=False) as bar:
        task: list[TaskID] = []

        def progress(done: int, total: int, account_id: str) -> None:
            if not task:
                task.append(bar.add_task(f"closing {period}", total=total))
            bar.update(task[0], completed=done, description=f"closing {period}: {account_id}")

        return close_period(
            make_sessionmaker(engine),
            period,
            grace=timedelta(hours=settings.tokenwallet_billing_grace_hours),
            finalize=finalize,
            progress=progress,
        )


def _record_close(engine: Engine, period: Period, result: CloseResult, *, finalize: bool) -> None:
    """Record the close in the audit log as the CLI's."""
    from sqlalchemy.orm import Session

    from api.audit import record_event

    with Session(engine) as session:
        record_event(
            session,
            actor="cli",
            actor_role=None,
            action="billing.close",
            target_type="billing_period",
            target_id=str(period),
            changes={
                "finalize": finalize,
                "status": result.status,
                "invoices": len(result.invoice_ids),
            },
        )
        session.commit()


@billing_app.command("pdf")
def billing_pdf(
    invoice_id: Annotated[str, typer.Argument(help="the invoice id (inv_...)")],
    output: Annotated[str, typer.Option("--output", "-o", help="file to write")] = "",
) -> None:
    """Write an invoice's PDF (to INVOICE_NUMBER.pdf by default)."""
    from pathlib import Path

    from sqlalchemy.orm import Session

    from invoicing.documents import Issuer, render_invoice_pdf
    from invoicing.models import Invoice

    settings = get_settings()
    from api.cli import _disposing, _fail, _migrated_engine

    with _disposing(_migrated_engine()) as engine, Session(engine) as session:
        inv = session.get(Invoice, invoice_id)
        if inv is None:
            raise _fail(f"invoice {invoice_id} does not exist")
        issuer = Issuer(
            name=settings.tokenwallet_invoice_issuer_name,
            address=settings.tokenwallet_invoice_issuer_address,
            tax_id=settings.tokenwallet_invoice_issuer_tax_id,
        )
        pdf = render_invoice_pdf(session, inv, issuer=issuer)
        target = Path(output or f"{inv.number or 'draft-' + inv.id}.pdf")
    target.write_bytes(pdf)
    typer.echo(f"wrote {target}")
