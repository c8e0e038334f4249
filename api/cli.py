"""The ``tokenwallet`` command: serve, scheduler, db upgrade/check/audit, create-key."""

from __future__ import annotations

import logging
import time
from typing import Annotated

import typer

from api.settings import get_settings

app = typer.Typer(
    help="tokenwallet: prepaid token wallet and billing backend", no_args_is_help=True
)
db_app = typer.Typer(help="Database maintenance", no_args_is_help=True)
app.add_typer(db_app, name="db")


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


def main() -> None:
    """Console entry point."""
    app(prog_name="tokenwallet")


if __name__ == "__main__":
    main()
