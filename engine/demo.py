"""The demo: a generated `orders` table in SQLite (with some dirty rows) loaded into PostgreSQL."""

from __future__ import annotations

import os
import random
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from engine.report import RunReport

STATUSES = ["new", "paid", "shipped", "delivered", "cancelled", "refunded"]
CURRENCIES = ["EUR", "USD", "GBP", "JPY", "CHF"]
DIRTY_KINDS = ["negative amount", "bad email", "unknown status", "unknown currency", "null customer"]


def order_row(i: int, rng: random.Random, dirty: str | None) -> tuple[object, ...]:
    created = datetime(2024, 1, 1, tzinfo=UTC) + timedelta(seconds=rng.randrange(0, 365 * 86400))
    amount = f"{rng.randrange(100, 5_000_000) / 100:.2f}"
    email = f"  Customer{rng.randrange(1, 50_000)}@Example.COM "
    status, currency, customer = rng.choice(STATUSES), rng.choice(CURRENCIES), rng.randrange(1, 50_000)
    if dirty == "negative amount":
        amount = f"-{amount}"
    elif dirty == "bad email":
        email = "not-an-email"
    elif dirty == "unknown status":
        status = "lost"
    elif dirty == "unknown currency":
        currency = "XXX"
    elif dirty == "null customer":
        customer = None  # type: ignore[assignment]
    note = None if i % 7 == 0 else f"order {i}: " + "gift wrap, leave at door. " * rng.randrange(1, 4)
    return (i, customer, status.upper() if i % 5 == 0 else status, amount, currency.lower() if i % 3 == 0 else currency,
            email, created.strftime("%Y-%m-%d %H:%M:%S"), (created + timedelta(days=2)).strftime("%Y-%m-%d"),
            rng.randrange(1, 10), note)


def generate_sqlite(path: Path, rows: int = 300_000, dirty_every: int = 397, seed: int = 7) -> int:
    """Write the demo `orders` table; every `dirty_every`-th row breaks one rule. Returns the dirty count."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    rng = random.Random(seed)
    dirty = 0
    with sqlite3.connect(path) as conn:
        conn.execute("""CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER, status TEXT,
            amount NUMERIC(12,2), currency CHAR(3), email TEXT, created_at TIMESTAMP, ship_by DATE,
            quantity INTEGER, note TEXT)""")
        batch = []
        for i in range(1, rows + 1):
            kind = DIRTY_KINDS[(i // dirty_every) % len(DIRTY_KINDS)] if i % dirty_every == 0 else None
            dirty += kind is not None
            batch.append(order_row(i, rng, kind))
            if len(batch) == 50_000:
                conn.executemany("INSERT INTO orders VALUES (?,?,?,?,?,?,?,?,?,?)", batch)
                batch.clear()
        conn.executemany("INSERT INTO orders VALUES (?,?,?,?,?,?,?,?,?,?)", batch)
    return dirty


def row_count(path: Path) -> int | None:
    """Rows in an existing demo file, or None when there is none."""
    if not path.exists():
        return None
    try:
        with sqlite3.connect(path) as conn:
            return int(conn.execute("SELECT COUNT(*) FROM orders").fetchone()[0])
    except sqlite3.Error:
        return None


def run_demo(config_path: str, rows: int, regenerate: bool, progress: Callable[[str], None]) -> RunReport:
    """Generate the demo data (when missing or of another size) and run the demo job into PostgreSQL: the local
    service, DATABASE_URL's, or a private server started for the demo and stopped after it."""
    from engine.config import load_config
    from engine.localpg import create_database, ensure_postgres
    from engine.pipeline import run_job

    server = ensure_postgres(progress)
    try:
        create_database(server.url, "engine_demo")
        os.environ["DATABASE_URL"] = server.database_url("engine_demo")
        config = load_config(config_path)
        sqlite_file = config.source_url.sqlite_path
        assert sqlite_file is not None, "the demo job reads SQLite"
        if regenerate or row_count(sqlite_file) != rows:
            progress(f"generating {rows:,} demo orders into {sqlite_file}")
            dirty = generate_sqlite(sqlite_file, rows=rows)
            progress(f"{dirty:,} of them break a rule on purpose")
        return run_job(config, fresh=True, progress=progress)
    finally:
        if server.private:
            progress("stopping the private PostgreSQL server")
            server.stop()
