"""MariaDB → PostgreSQL and SQLite → PostgreSQL, a whole database: rows value by value, keys, indexes, foreign
keys with their actions, auto-increments continuing from the source's own counter, views, orphans, naming."""

from __future__ import annotations

import re
import sqlite3
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

import engine
from engine.config import load_config
from engine.errors import OrphanRows
from tests.conftest import ROOT, mariadb_connect, mariadb_exec, pg_rows, run_cli, sqlite_exec, write_job

CHINOOK = [  # a small Chinook-like schema in MySQL's style: CamelCase names, auto-increments, a self-reference
    """CREATE TABLE Artist (ArtistId int AUTO_INCREMENT PRIMARY KEY, Name varchar(120))""",
    """CREATE TABLE Album (AlbumId int AUTO_INCREMENT PRIMARY KEY, Title varchar(160) NOT NULL, ArtistId int NOT NULL,
        KEY IFK_AlbumArtistId (ArtistId),
        CONSTRAINT FK_AlbumArtistId FOREIGN KEY (ArtistId) REFERENCES Artist (ArtistId) ON DELETE CASCADE)""",
    """CREATE TABLE Employee (EmployeeId int AUTO_INCREMENT PRIMARY KEY, LastName varchar(20) NOT NULL,
        ReportsTo int, Email varchar(60), UNIQUE KEY UQ_Email (Email),
        CONSTRAINT FK_EmployeeReportsTo FOREIGN KEY (ReportsTo) REFERENCES Employee (EmployeeId) ON DELETE SET NULL)""",
    """CREATE TABLE Invoice (InvoiceId int AUTO_INCREMENT PRIMARY KEY, InvoiceDate date NOT NULL,
        Total decimal(10,2) NOT NULL DEFAULT 0.00, Status enum('open','paid') NOT NULL DEFAULT 'open',
        SupportRepId int, CONSTRAINT FK_InvoiceRep FOREIGN KEY (SupportRepId) REFERENCES Employee (EmployeeId),
        CONSTRAINT CK_Total CHECK (Total >= 0))""",
    """CREATE TABLE InvoiceLine (InvoiceId int NOT NULL, LineNo int NOT NULL, AlbumId int NOT NULL,
        UnitPrice decimal(10,2) NOT NULL, PRIMARY KEY (InvoiceId, LineNo),
        CONSTRAINT FK_LineInvoice FOREIGN KEY (InvoiceId) REFERENCES Invoice (InvoiceId) ON DELETE CASCADE
            ON UPDATE CASCADE,
        CONSTRAINT FK_LineAlbum FOREIGN KEY (AlbumId) REFERENCES Album (AlbumId))""",
    "CREATE TABLE EmptyCounter (Id int AUTO_INCREMENT PRIMARY KEY, Note varchar(10))",
    "ALTER TABLE EmptyCounter AUTO_INCREMENT = 500",
    "CREATE VIEW ArtistAlbums AS SELECT a.ArtistId, a.Name, count(b.AlbumId) AS Albums FROM Artist a "
    "LEFT JOIN Album b ON b.ArtistId = a.ArtistId GROUP BY a.ArtistId, a.Name",
    "CREATE VIEW BusyArtists AS SELECT ArtistId, Name FROM ArtistAlbums WHERE Albums > 1",
    "INSERT INTO Artist (ArtistId, Name) VALUES (1, 'AC/DC'), (2, 'Accept'), (3, 'Aerosmith'), (7, NULL)",
    "DELETE FROM Artist WHERE ArtistId = 7",  # AUTO_INCREMENT is 8 now: the target must continue there
    "INSERT INTO Album (Title, ArtistId) SELECT concat('Album ', seq), 1 + seq % 3 FROM seq_1_to_60",
    "INSERT INTO Employee VALUES (1, 'Adams', NULL, 'a@x'), (2, 'Edwards', 1, 'e@x'), (3, 'Peacock', 2, NULL)",
    "INSERT INTO Invoice (InvoiceDate, Total, Status, SupportRepId) SELECT DATE '2024-01-01' + INTERVAL seq DAY, "
    "seq * 1.25, IF(seq % 2 = 0, 'paid', 'open'), 1 + seq % 3 FROM seq_1_to_400",
    "INSERT INTO InvoiceLine SELECT i.InvoiceId, l.seq, 1 + (i.InvoiceId + l.seq) % 60, 0.99 * l.seq "
    "FROM Invoice i, seq_1_to_3 l",
]

_NUMBER = re.compile(r"-?\d+(\.\d+)?")
SNAKE_TABLES = {"artist": "Artist", "album": "Album", "employee": "Employee", "invoice": "Invoice",
                "invoice_line": "InvoiceLine", "empty_counter": "EmptyCounter"}


def _job(tmp_path: Path, source: str, target: str, naming: str, extra_target: str = "") -> Path:
    return write_job(tmp_path, f"""
[job]
name = "whole_{naming}"

[source]
url = "{source}"
tables = ["*"]

[target]
url = "{target}"
schema = "chinook"
mode = "replace"
naming = "{naming}"
{extra_target}

[pipeline]
staging_dir = "{ROOT / '.engine' / 'test-staging'}"
""")


def norm(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Values as comparable across drivers: numbers as Decimal (the PostgreSQL driver gives numeric as text)."""
    def one(v: Any) -> Any:
        if isinstance(v, (int, float, Decimal)) or (isinstance(v, str) and _NUMBER.fullmatch(v)):
            return Decimal(str(v))
        return v

    return [tuple(one(v) for v in r) for r in rows]


def mariadb_rows(url: str, table: str) -> list[tuple[Any, ...]]:
    conn = mariadb_connect(url.rsplit("/", 1)[1])
    try:
        with conn.cursor() as cur:
            cur.execute(f"SELECT * FROM `{table}` ORDER BY 1, 2")
            return [tuple(r) for r in cur.fetchall()]
    finally:
        conn.close()


@pytest.mark.mariadb
def test_mariadb_database_arrives_with_keys_sequences_and_views(tmp_path: Path, mariadb_db: str, pg_db: str) -> None:
    mariadb_exec(mariadb_db, *CHINOOK)
    report = engine.run_job(load_config(_job(tmp_path, mariadb_db, pg_db, "snake")))
    assert report.status == "succeeded"
    for target, source in SNAKE_TABLES.items():  # value by value
        got = pg_rows(pg_db, f"SELECT * FROM chinook.{target} ORDER BY 1, 2")
        assert norm(got) == norm(mariadb_rows(mariadb_db, source)), target
    # MariaDB says RESTRICT where no action was given: InnoDB checks at once, as PostgreSQL's RESTRICT does
    fks = pg_rows(pg_db, """SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid), convalidated
                           FROM pg_constraint WHERE contype = 'f' AND connamespace = 'chinook'::regnamespace
                           ORDER BY 1, 2""")
    assert fks == [
        ("chinook.album", "fk_album_artist_id", "FOREIGN KEY (artist_id) REFERENCES chinook.artist(artist_id) "
                                                "ON UPDATE RESTRICT ON DELETE CASCADE", True),
        ("chinook.employee", "fk_employee_reports_to", "FOREIGN KEY (reports_to) REFERENCES "
                                                       "chinook.employee(employee_id) ON UPDATE RESTRICT "
                                                       "ON DELETE SET NULL", True),
        ("chinook.invoice", "fk_invoice_rep", "FOREIGN KEY (support_rep_id) REFERENCES chinook.employee(employee_id) "
                                              "ON UPDATE RESTRICT ON DELETE RESTRICT", True),
        ("chinook.invoice_line", "fk_line_album", "FOREIGN KEY (album_id) REFERENCES chinook.album(album_id) "
                                                  "ON UPDATE RESTRICT ON DELETE RESTRICT", True),
        ("chinook.invoice_line", "fk_line_invoice", "FOREIGN KEY (invoice_id) REFERENCES chinook.invoice(invoice_id) "
                                                    "ON UPDATE CASCADE ON DELETE CASCADE", True)]
    keys = dict(pg_rows(pg_db, """SELECT conrelid::regclass::text, pg_get_constraintdef(oid) FROM pg_constraint
                                 WHERE contype = 'p' AND connamespace = 'chinook'::regnamespace"""))
    assert keys["chinook.invoice_line"] == "PRIMARY KEY (invoice_id, line_no)"
    indexes = {r[0] for r in pg_rows(pg_db, "SELECT indexname FROM pg_indexes WHERE schemaname = 'chinook'")}
    assert {"ifk_album_artist_id", "uq_email", "artist_pkey", "invoice_line_pkey"} <= indexes
    # auto-increments continue from MariaDB's own counter: past a deleted row, and 500 for an empty table
    assert pg_rows(pg_db, "INSERT INTO chinook.artist (name) VALUES ('new') RETURNING artist_id") == [(8,)]
    assert pg_rows(pg_db, "INSERT INTO chinook.empty_counter (note) VALUES ('x') RETURNING id") == [(500,)]
    # ENUM became a check; the CHECK was carried; the views read the new tables, one through the other
    for bad in ("UPDATE chinook.invoice SET status = 'lost' WHERE invoice_id = 1",
                "UPDATE chinook.invoice SET total = -1 WHERE invoice_id = 1"):
        with pytest.raises(Exception, match="check"):
            pg_rows(pg_db, bad)
    assert pg_rows(pg_db, "SELECT artist_id, name FROM chinook.busy_artists ORDER BY 1") == \
        [(1, "AC/DC"), (2, "Accept"), (3, "Aerosmith")]


@pytest.mark.mariadb
def test_mariadb_what_postgresql_cannot_express_is_reported_with_a_suggestion(tmp_path: Path, mariadb_db: str,
                                                                            pg_db: str) -> None:
    mariadb_exec(mariadb_db, *CHINOOK, "CREATE FULLTEXT INDEX FT_Title ON Album (Title)",
                 "CREATE TRIGGER LowerEmail BEFORE INSERT ON Employee FOR EACH ROW SET NEW.Email = lower(NEW.Email)")
    plan = run_cli("plan", str(_job(tmp_path, mariadb_db, pg_db, "keep")))
    assert "index Album.FT_Title" in plan.stdout and "to_tsvector" in plan.stdout, plan.stdout
    report = engine.run_job(load_config(_job(tmp_path, mariadb_db, pg_db, "keep")))
    text = report.render()
    assert "not carried  index Album.FT_Title" in text and "trigger" in text.lower()
    assert pg_rows(pg_db, "SELECT count(*) FROM pg_indexes WHERE schemaname = 'chinook' AND indexname ILIKE "
                          "'%ft_title%'") == [(0,)]


@pytest.mark.mariadb
def test_mariadb_orphans_stop_the_run_before_any_row_moves(tmp_path: Path, mariadb_db: str, pg_db: str) -> None:
    mariadb_exec(mariadb_db, *CHINOOK)
    mariadb_exec(mariadb_db, "SET foreign_key_checks = 0", "INSERT INTO Album (Title, ArtistId) VALUES ('Lost', 99)")
    with pytest.raises(OrphanRows, match=r"FK_AlbumArtistId: 1 row\(s\) of Album \(ArtistId\)"):
        engine.run_job(load_config(_job(tmp_path, mariadb_db, pg_db, "keep")))
    assert pg_rows(pg_db, "SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'chinook%'") == [(0,)]


SQLITE = [
    "PRAGMA foreign_keys = ON",
    "CREATE TABLE Genre (GenreId INTEGER PRIMARY KEY AUTOINCREMENT, Name TEXT NOT NULL UNIQUE)",
    """CREATE TABLE Track (TrackId INTEGER PRIMARY KEY, Name TEXT NOT NULL, GenreId INTEGER
        REFERENCES Genre (GenreId) ON DELETE SET NULL, Milliseconds INTEGER NOT NULL CHECK (Milliseconds > 0),
        Price NUMERIC(10,2) DEFAULT 0.99)""",
    "CREATE INDEX IX_TrackGenre ON Track (GenreId)",
    "CREATE TABLE Playlist (PlaylistId INTEGER NOT NULL, TrackId INTEGER NOT NULL REFERENCES Track, "
    "PRIMARY KEY (PlaylistId, TrackId))",
    "CREATE VIEW LongTracks AS SELECT TrackId, Name FROM Track WHERE Milliseconds > 300000",
    "INSERT INTO Genre (GenreId, Name) VALUES (1, 'Rock'), (2, 'Jazz'), (5, 'Metal')",
    "DELETE FROM Genre WHERE GenreId = 5",  # AUTOINCREMENT remembers 5: the next is 6
]


def test_sqlite_database_arrives_with_lower_names(tmp_path: Path, pg_db: str) -> None:
    path = tmp_path / "music.db"
    sqlite_exec(path, *SQLITE, many=("INSERT INTO Track (Name, GenreId, Milliseconds, Price) VALUES (?, ?, ?, ?)",
                                     [(f"T{i}", [1, 2, None][i % 3], 1000 * i, i / 4) for i in range(1, 501)]))
    sqlite_exec(path, "INSERT INTO Playlist SELECT 1 + TrackId % 4, TrackId FROM Track")
    report = engine.run_job(load_config(_job(tmp_path, f"sqlite:///{path}", pg_db, "lower")))
    assert report.status == "succeeded"
    with sqlite3.connect(path) as conn:
        for table in ("Genre", "Track", "Playlist"):
            want = conn.execute(f"SELECT * FROM {table} ORDER BY 1, 2").fetchall()
            got = pg_rows(pg_db, f"SELECT * FROM chinook.{table.lower()} ORDER BY 1, 2")
            assert norm(got) == norm(want), table
    assert pg_rows(pg_db, "INSERT INTO chinook.genre (name) VALUES ('Pop') RETURNING genreid") == [(6,)]
    assert pg_rows(pg_db, "INSERT INTO chinook.track (name, milliseconds) VALUES ('n', 1) RETURNING trackid") == \
        [(501,)]
    assert pg_rows(pg_db, "SELECT count(*) FROM chinook.longtracks") == [(200,)]
    assert pg_rows(pg_db, """SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE contype = 'f'
                            AND conrelid = 'chinook.track'::regclass""") == \
        [("FOREIGN KEY (genreid) REFERENCES chinook.genre(genreid) ON DELETE SET NULL",)]
    assert pg_rows(pg_db, "SELECT indexname FROM pg_indexes WHERE tablename = 'track' ORDER BY 1") == \
        [("ix_trackgenre",), ("track_pkey",)]
