"""The ``tokenwallet`` command: serve, scheduler, db upgrade/check/audit, create-key."""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Any

import typer

from api.cli_billing import billing_app
from api.cli_reports import reports_app
from api.settings import get_settings

if TYPE_CHECKING:
    from collections.abc import Iterator
    from datetime import datetime
    from pathlib import Path

    from sqlalchemy.engine import Engine

    from plans.litellm_import import ImportReport

app = typer.Typer(
    help="tokenwallet: prepaid token wallet and billing backend", no_args_is_help=True
)
db_app = typer.Typer(help="Database maintenance", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(billing_app, name="billing")
app.add_typer(reports_app, name="reports")
payments_app = typer.Typer(help="Card payments (Stripe)", no_args_is_help=True)
app.add_typer(payments_app, name="payments")
accounts_app = typer.Typer(help="Accounts: payments resellers collect", no_args_is_help=True)
app.add_typer(accounts_app, name="accounts")
catalog_app = typer.Typer(help="The price catalog", no_args_is_help=True)
app.add_typer(catalog_app, name="catalog")


def _setup_logging() -> None:
    from api.logs import configure_logging

    settings = get_settings()
    configure_logging(settings.tokenwallet_log_level, access_log=settings.tokenwallet_access_log)


def _database_url(*, create: bool = False) -> str:
    """The configured database's URL, starting the embedded PostgreSQL when DATABASE_URL is unset.

    Without ``create``, an embedded data directory that does not exist is reported in one line (exit
    2) instead of being created empty.
    """
    from api.db import resolve_database_url

    settings = get_settings()
    if not settings.database_url and not create:
        pgdata = settings.tokenwallet_data_dir.expanduser().resolve() / "pgdata"
        if not pgdata.exists():
            raise _fail(
                f"no tokenwallet database in {pgdata.parent} (TOKENWALLET_DATA_DIR): run"
                " `tokenwallet db upgrade` (or `tokenwallet serve`) with that data directory"
                " first, or point TOKENWALLET_DATA_DIR / DATABASE_URL at the database you use"
            )
    return resolve_database_url(settings)


def _fail(message: str) -> typer.Exit:
    """Print one line on stderr; the caller raises the returned Exit (code 2)."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(2)


def _migrated_engine(pool_size: int = 1) -> Engine:
    """An engine on the configured database, which must be migrated to this version's head.

    Otherwise one line says so and how to fix it (exit 2) instead of a traceback from the first
    query. An embedded data directory that does not exist is not created.
    """
    from api.db import make_engine, migration_state

    url = _database_url()
    engine = make_engine(url, pool_size=pool_size)
    state = migration_state(engine)
    if state.error is not None or state.current != state.head:
        engine.dispose()
        where = state.where
        if state.error is not None:
            raise _fail(f"cannot reach the database at {where}: {state.error}")
        if state.current is None:
            raise _fail(
                f"the database at {where} is not migrated (no tokenwallet tables); run"
                " `tokenwallet db upgrade` against it first"
            )
        raise _fail(
            f"the database at {where} is at migration {state.current}; this tokenwallet needs"
            f" {state.head}: run `tokenwallet db upgrade`"
        )
    return engine


@contextmanager
def _disposing(engine: Engine) -> Iterator[Engine]:
    """Yield ``engine`` to a command's block and dispose of it afterwards, whatever happens.

    A domain error raised in the block prints one ``error:`` line and exits with code 2.
    """
    from ledger.errors import DomainError

    try:
        yield engine
    except DomainError as exc:
        raise _fail(exc.detail) from exc
    finally:
        engine.dispose()


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 8000,
    scheduler: Annotated[bool, typer.Option(help="run the periodic jobs in this process")] = True,
    migrate: Annotated[bool, typer.Option(help="apply migrations before serving")] = True,
    workers: Annotated[
        int, typer.Option(min=1, max=64, help="HTTP worker processes (one per core is typical)")
    ] = 1,
) -> None:
    """Serve the HTTP API (and the scheduler).

    Without DATABASE_URL, starts embedded PostgreSQL and keeps it running (restarted if it dies,
    stopped when serve stops).
    """
    import signal

    from api.db import embedded_server, upgrade
    from api.embedded import EmbeddedSupervisor

    _setup_logging()
    started = time.monotonic()
    url = _database_url(create=True)
    settings = get_settings()
    embedded = None if settings.database_url else embedded_server(settings.tokenwallet_data_dir)
    supervisor = EmbeddedSupervisor(embedded) if embedded is not None else None
    try:
        if migrate:
            upgrade(url)
        if supervisor is not None:
            supervisor.start_watching()
        # uvicorn re-raises SIGTERM after its graceful shutdown; as an exception it unwinds
        # through the finally below, which stops the embedded PostgreSQL
        signal.signal(signal.SIGTERM, _exit_on_signal)
        _serve(url, host, port, workers, scheduler, started)
    finally:
        if supervisor is not None:
            supervisor.stop()


def _exit_on_signal(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def _serve(
    url: str,
    host: str,
    port: int,
    workers: int,
    scheduler: bool,
    started: float,  # float-ok: a clock
) -> None:
    import os

    import uvicorn

    from api.app import create_app, tune_gc
    from api.db import make_engine, make_sessionmaker

    settings = get_settings()
    log = logging.getLogger("tokenwallet")
    log.warning(
        "database ready in %.1f s; serving on http://%s:%d with %d worker(s)",
        time.monotonic() - started,
        host,
        port,
        workers,
    )
    if workers == 1:
        engine = make_engine(url, pool_size=settings.tokenwallet_db_pool_size)
        application = create_app(engine, settings=settings, scheduler=scheduler)
        tune_gc()
        uvicorn.run(application, host=host, port=port, log_level="warning", access_log=False)
        return
    # Several processes: each worker builds its own app on the resolved database; the jobs run
    # once, in this supervising process.
    os.environ["DATABASE_URL"] = url
    sched = None
    if scheduler:
        from api.scheduler import start_background

        sched = start_background(make_sessionmaker(make_engine(url, pool_size=2)), settings)
    try:
        from api.workers import supervise

        supervise(host, port, workers)
    finally:
        if sched is not None:
            sched.shutdown(wait=False)


@app.command("scheduler")
def run_scheduler() -> None:
    """Run only the periodic jobs (for deployments that serve with --no-scheduler)."""
    from api.db import make_sessionmaker
    from api.scheduler import run_blocking

    _setup_logging()
    engine = _migrated_engine(pool_size=2)
    run_blocking(make_sessionmaker(engine), get_settings())


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument()] = "head") -> None:
    """Apply migrations up to REVISION (default: head)."""
    from api.db import upgrade

    _setup_logging()
    upgrade(_database_url(create=True), revision)
    typer.echo(f"database upgraded to {revision}")


@db_app.command("check")
def db_check() -> None:
    """Fail unless migrations have one head and the database matches the models."""
    from api.db import check

    _setup_logging()
    try:
        check(_database_url(create=True))
    except Exception as exc:
        typer.echo(f"db check failed: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo("db check ok: one migration head, schema matches the models")


@db_app.command("audit")
def db_audit() -> None:
    """Re-derive the ledger and wallet invariants from the raw rows; fail if any is broken."""
    from sqlalchemy.orm import Session

    from api.audit import run_ledger_audit

    with _disposing(_migrated_engine()) as engine, Session(engine) as session:
        problems = run_ledger_audit(session, actor="cli")
        session.commit()  # the result is kept (audit log, and /metrics reports it)
    for p in problems:
        typer.echo(p, err=True)
    if problems:
        raise typer.Exit(1)
    typer.echo(
        "audit ok: every entry balances, every cached balance equals its postings,"
        " every account's lots equal its ledger balances"
    )


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

    from api.audit import record_event
    from api.auth import create_key

    with _disposing(_migrated_engine()) as engine, Session(engine) as session:
        new = create_key(
            session, role=role, account_id=account, description=description, created_by="cli"
        )
        record_event(
            session,
            actor="cli",
            actor_role=None,
            action="api_key.create",
            target_type="api_key",
            target_id=new.id,
            changes={"role": role, "account_id": account, "description": description},
        )
        session.commit()
    typer.echo(new.secret)
    typer.echo(f"created {new.role} key {new.id}; store it now, it is not shown again", err=True)


@catalog_app.command("import-litellm")
def catalog_import_litellm(
    file: Annotated[
        str | None, typer.Argument(help="a model_prices_and_context_window.json")
    ] = None,
    bundled: Annotated[
        bool, typer.Option("--bundled", help="the map of the installed litellm package")
    ] = False,
    effective_from: Annotated[
        str | None,
        typer.Option(help="when the new card takes effect (RFC 3339; default now + 15 min)"),
    ] = None,
    markup: Annotated[
        str | None, typer.Option(help="percent added to every price, e.g. 20")
    ] = None,
    provider: Annotated[
        list[str] | None, typer.Option(help="only this litellm_provider (repeatable)")
    ] = None,
    strict: Annotated[
        bool, typer.Option("--strict", help="refuse models whose prices need rounding")
    ] = False,
    apply: Annotated[
        bool, typer.Option("--apply", help="create the models and the card (default: dry run)")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="the whole report as JSON")] = False,
) -> None:
    """Import LiteLLM's price map as a new USD rate card: a dry run unless --apply.

    Models the map prices per token are imported (tiers, context tiers, cache writes, audio and
    image tokens, web search and code execution fees); the report lists what was refused and
    why, and what was flagged (rounded prices, dimensions not imported).
    """
    from datetime import datetime
    from pathlib import Path

    from api.db import make_engine
    from api.pricemaps import bundled_map_path

    with _disposing(make_engine(_database_url(), pool_size=1)) as engine:
        if bundled == (file is not None):
            raise typer.BadParameter("give FILE or --bundled, one of the two")
        path = bundled_map_path() if bundled else Path(str(file))
        start = datetime.fromisoformat(effective_from) if effective_from else None
        report = _import_litellm_map(
            engine,
            path,
            start,
            markup=markup,
            providers=provider or None,
            strict=strict,
            apply=apply,
        )
    _echo_import_report(report, as_json=as_json)


def _import_litellm_map(
    engine: Engine,
    path: Path,
    effective_from: datetime | None,
    *,
    markup: str | None,
    providers: list[str] | None,
    strict: bool,
    apply: bool,
) -> ImportReport:
    """Import the map at ``path`` as a USD card and return the import's report.

    The card takes effect at ``effective_from`` (default now + 15 minutes) and is committed
    only when ``apply``.
    """
    from datetime import UTC, datetime, timedelta

    from api.db import make_sessionmaker
    from api.pricemaps import load_map
    from plans.litellm_import import import_litellm
    from wallet.maintenance import usage_of_models

    settings = get_settings()
    start = effective_from or datetime.now(UTC) + timedelta(minutes=15)
    since = datetime.now(UTC) - timedelta(days=settings.tokenwallet_usage_retention_days)
    with make_sessionmaker(engine)() as session:
        report = import_litellm(
            session,
            load_map(path),
            effective_from=start,
            markup_pct=markup,
            providers=providers,
            strict=strict,
            apply=apply,
            usage_of_models=lambda models, at: usage_of_models(session, "USD", models, at),
            usage_since=since,
        )
        session.commit()
    return report


def _echo_import_report(report: ImportReport, *, as_json: bool) -> None:
    """Print an import's outcome.

    The whole report as JSON, or counts, the rounding rule and the refusals grouped by reason.
    """
    import json

    from api.pricemaps import report_out

    out = report_out(report)
    if as_json:
        typer.echo(json.dumps(out, indent=2))
        return
    counts = ", ".join(f"{k} {v}" for k, v in sorted(out["counts"].items()))
    verb = f"created card {report.card_id}" if report.applied else "dry run (nothing written)"
    typer.echo(f"{verb}; effective {out['effective_from']}; {counts}")
    typer.echo(f"rounding: {report.rounding_rule}")
    reasons: dict[str, int] = {}
    for r in out["refused"]:
        key = r["reason"] if "mode" in r["reason"] else r["reason"][:80]
        reasons[key] = reasons.get(key, 0) + 1
    for reason, n in sorted(reasons.items(), key=lambda kv: -kv[1]):
        typer.echo(f"refused {n:5d}: {reason}")


@accounts_app.command("record-overage-payment")
def accounts_record_overage_payment(
    account: Annotated[str, typer.Argument(help="the sub-account's id")],
    amount: Annotated[str, typer.Option(help="decimal amount in the account's currency")],
    reference: Annotated[str, typer.Option(help="the payment's reference (idempotent)")],
) -> None:
    """Record what a reseller's customer paid for its sub-account's overage.

    Booked in the reseller's book (cash:collected / receivable:unbilled); prints the payment
    as JSON.
    """
    import json

    from sqlalchemy.orm import Session

    from api.db import make_engine
    from ledger.amounts import Amount
    from ledger.errors import DomainError
    from wallet.overage_payments import record_overage_payment

    engine = make_engine(_database_url(), pool_size=1)
    try:
        with Session(engine) as session:
            r = record_overage_payment(session, account, amount=amount, reference=reference)
            session.commit()
            out = {
                "id": r.payment.id,
                "account_id": r.payment.account_id,
                "reseller_id": r.payment.reseller_id,
                "amount": {
                    "amount": Amount(r.payment.amount, r.open.unit).format(),
                    "currency": r.payment.currency,
                },
                "reference": r.payment.reference,
                "replayed": r.replayed,
                "open": {"amount": r.open.format(), "currency": r.open.unit.code},
            }
    except DomainError as exc:
        raise _fail(f"{exc.code}: {exc.detail}") from exc
    finally:
        engine.dispose()
    typer.echo(json.dumps(out, indent=2))


def _payment_gateway() -> Any:
    """The Stripe gateway from the settings (a hook tests replace with an offline one)."""
    from api.payments import gateway_from_settings, require_gateway

    return require_gateway(gateway_from_settings(get_settings()))


@payments_app.command("reconcile")
def payments_reconcile(
    day: Annotated[str | None, typer.Option(help="UTC day YYYY-MM-DD (default: yesterday)")] = None,
) -> None:
    """Compare a day of Stripe balance transactions with cash:stripe; store and print the report.

    Exits 1 when they differ.
    """
    from datetime import UTC, date, datetime, timedelta

    from sqlalchemy.orm import Session

    from invoicing.payments.reconcile import reconcile_day

    _setup_logging()
    try:
        when = date.fromisoformat(day) if day else (datetime.now(UTC) - timedelta(days=1)).date()
    except ValueError as exc:
        raise _fail(f"--day must be YYYY-MM-DD; got {day!r}") from exc
    with _disposing(_migrated_engine()) as engine:
        gateway = _payment_gateway()
        with Session(engine) as session:
            reports = reconcile_day(session, gateway, when)
            session.commit()
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

    from invoicing.payments.events import retry_failed_events

    _setup_logging()
    with _disposing(_migrated_engine()) as engine, Session(engine) as session:
        report = retry_failed_events(session)
        session.commit()
    typer.echo(
        f"processed {len(report['processed'])} event(s); still failing: {len(report['failed'])}"
    )


def main() -> None:
    """Console entry point."""
    app(prog_name="tokenwallet")


if __name__ == "__main__":
    main()
