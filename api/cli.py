"""The ``tokenwallet`` command: serve, scheduler, db upgrade/check/audit, create-key."""

from __future__ import annotations

import logging
import time
from typing import Annotated, Any

import typer

from api.settings import get_settings

app = typer.Typer(
    help="tokenwallet: prepaid token wallet and billing backend", no_args_is_help=True
)
db_app = typer.Typer(help="Database maintenance", no_args_is_help=True)
app.add_typer(db_app, name="db")
payments_app = typer.Typer(help="Card payments (Stripe)", no_args_is_help=True)
app.add_typer(payments_app, name="payments")


def _setup_logging() -> None:
    logging.basicConfig(
        level=get_settings().tokenwallet_log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def _database_url() -> str:
    from api.db import resolve_database_url

    return resolve_database_url(get_settings())


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 8000,
    scheduler: Annotated[bool, typer.Option(help="run the periodic jobs in this process")] = True,
    migrate: Annotated[bool, typer.Option(help="apply migrations before serving")] = True,
) -> None:
    """Serve the HTTP API (and the scheduler). Without DATABASE_URL, starts embedded PostgreSQL."""
    import uvicorn

    from api.app import create_app
    from api.db import make_engine, upgrade

    _setup_logging()
    started = time.monotonic()
    url = _database_url()
    if migrate:
        upgrade(url)
    settings = get_settings()
    engine = make_engine(url, pool_size=settings.tokenwallet_db_pool_size)
    application = create_app(engine, settings=settings, scheduler=scheduler)
    logging.getLogger("tokenwallet").warning(
        "database ready in %.1f s; serving on http://%s:%d", time.monotonic() - started, host, port
    )
    uvicorn.run(application, host=host, port=port, log_level="warning", access_log=False)


@app.command("scheduler")
def run_scheduler() -> None:
    """Run only the periodic jobs (for deployments that serve with --no-scheduler)."""
    from api.db import make_engine, make_sessionmaker
    from api.scheduler import run_blocking

    _setup_logging()
    engine = make_engine(_database_url(), pool_size=2)
    run_blocking(make_sessionmaker(engine), get_settings())


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument()] = "head") -> None:
    """Apply migrations up to REVISION (default: head)."""
    from api.db import upgrade

    _setup_logging()
    upgrade(_database_url(), revision)
    typer.echo(f"database upgraded to {revision}")


@db_app.command("check")
def db_check() -> None:
    """Fail unless migrations have one head and the database matches the models."""
    from api.db import check

    _setup_logging()
    try:
        check(_database_url())
    except Exception as exc:
        typer.echo(f"db check failed: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo("db check ok: one migration head, schema matches the models")


@db_app.command("audit")
def db_audit() -> None:
    """Re-derive the ledger invariants from the raw rows; fail if any is broken."""
    from sqlalchemy.orm import Session

    from api.db import make_engine
    from ledger.audit import find_violations

    engine = make_engine(_database_url(), pool_size=1)
    with Session(engine) as session:
        problems = find_violations(session)
    engine.dispose()
    for p in problems:
        typer.echo(p, err=True)
    if problems:
        raise typer.Exit(1)
    typer.echo("ledger audit ok: every entry balances, every cached balance equals its postings")


@app.command("create-key")
def create_key_command(
    role: Annotated[str, typer.Option(help="admin, finance, gateway, reseller or customer")],
    account: Annotated[
        str | None, typer.Option("--account", help="account the key acts for")
    ] = None,
    description: Annotated[str, typer.Option(help="a note to recognize the key by")] = "",
) -> None:
    """Create an API key and print it on stdout (it is not shown again)."""
    from sqlalchemy.orm import Session

    from api.auth import create_key
    from api.db import make_engine
    from ledger.errors import DomainError

    engine = make_engine(_database_url(), pool_size=1)
    try:
        with Session(engine) as session:
            new = create_key(
                session, role=role, account_id=account, description=description, created_by="cli"
            )
            session.commit()
    except DomainError as exc:
        typer.echo(f"error: {exc.detail}", err=True)
        raise typer.Exit(2) from exc
    finally:
        engine.dispose()
    typer.echo(new.secret)
    typer.echo(f"created {new.role} key {new.id}; store it now, it is not shown again", err=True)


def _payment_gateway() -> Any:
    """The Stripe gateway from the settings (a hook tests replace with an offline one)."""
    from api.payments import gateway_from_settings, require_gateway

    return require_gateway(gateway_from_settings(get_settings()))


@payments_app.command("reconcile")
def payments_reconcile(
    day: Annotated[str | None, typer.Option(help="UTC day YYYY-MM-DD (default: yesterday)")] = None,
) -> None:
    """Compare a day of Stripe balance transactions with cash:stripe; store and print the
    report. Exits 1 when they differ."""
    from datetime import UTC, date, datetime, timedelta

    from sqlalchemy.orm import Session

    from api.db import make_engine
    from invoicing.payments.reconcile import reconcile_day
    from ledger.errors import DomainError

    _setup_logging()
    try:
        when = date.fromisoformat(day) if day else (datetime.now(UTC) - timedelta(days=1)).date()
    except ValueError as exc:
        typer.echo(f"error: --day must be YYYY-MM-DD; got {day!r}", err=True)
        raise typer.Exit(2) from exc
    engine = make_engine(_database_url(), pool_size=1)
    try:
        gateway = _payment_gateway()
        with Session(engine) as session:
            reports = reconcile_day(session, gateway, when)
            session.commit()
    except DomainError as exc:
        typer.echo(f"error: {exc.detail}", err=True)
        raise typer.Exit(2) from exc
    finally:
        engine.dispose()
    if not reports:
        typer.echo(f"{when}: no Stripe balance transactions and no cash:stripe movements")
    for r in reports:
        state = "balanced" if r.balanced else f"DIFFERENCE {r.difference.format()}"
        typer.echo(
            f"{when} {r.currency}: Stripe net {r.provider_net.format()}"
            f" (fees {r.provider_fees.format()}, {r.transactions} transactions),"
            f" ledger {r.ledger_net.format()}: {state}"
        )
        for m in r.details.get("mismatches", []):
            typer.echo(
                f"  {m['ref']}: Stripe {m['provider']}, ledger {m['ledger']}"
                f" (difference {m['difference']})"
            )
    if any(not r.balanced for r in reports):
        raise typer.Exit(1)


@payments_app.command("retry-events")
def payments_retry_events() -> None:
    """Process again the Stripe events whose processing failed."""
    from sqlalchemy.orm import Session

    from api.db import make_engine
    from invoicing.payments.events import retry_failed_events

    _setup_logging()
    engine = make_engine(_database_url(), pool_size=1)
    try:
        with Session(engine) as session:
            report = retry_failed_events(session)
            session.commit()
    finally:
        engine.dispose()
    typer.echo(
        f"processed {len(report['processed'])} event(s); still failing: {len(report['failed'])}"
    )


def main() -> None:
    """Console entry point."""
    app(prog_name="tokenwallet")


if __name__ == "__main__":
    main()
