"""The MySQL/MariaDB and SQLite catalog readers against real databases: one small schema in each, with composite
and natural keys, a self-reference and a foreign-key cycle, auto-increments with gaps and advanced past their rows,
ENUM/SET, checks, a generated column, views on views, a trigger, a name with a space, and the job's filters (an
excluded table, a table without its rows, a view left out by a pattern). The model is compared field by field."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.dbcatalog_mysql import read_mysql
from engine.dbcatalog_sqlite import read_sqlite
from engine.dbschema import Check, Column, DatabaseSchema, ForeignKey, Index, NotCarried, View, matches
from engine.urls import parse_url
from tests.conftest import mariadb_exec, sqlite_exec

PATTERNS = ["*", "!secret", "!tmp_*"]  # `secret` and the `tmp_` views are left out


def include(name: str) -> bool:
    return matches(name, PATTERNS)


def exclude_data(name: str) -> bool:
    return name == "audit_log"


def by_what(db: DatabaseSchema) -> dict[str, NotCarried]:
    return {n.what: n for n in db.not_carried}


def pk(table: str, *columns: str) -> Index:
    return Index(name=f"{table}_pkey", columns=list(columns), unique=True, primary=True)


# ------------------------------------------------------------------------------------------------ MariaDB

MARIADB_SCHEMA = [
    """CREATE TABLE customer (
        id int AUTO_INCREMENT PRIMARY KEY,
        email varchar(100) NOT NULL,
        name varchar(200) DEFAULT 'it''s',
        status enum('new','vip','it''s') NOT NULL DEFAULT 'new',
        tags set('a','b','c'),
        created timestamp NULL DEFAULT current_timestamp(),
        doc json,
        score int DEFAULT (1 + 1),
        bio text,
        full_name varchar(300) AS (concat(name, ' ', email)) STORED,
        referrer int,
        CONSTRAINT score_positive CHECK (score >= 0),
        UNIQUE KEY uq_email (email),
        KEY ix_name (name(10)),
        FULLTEXT KEY ft_bio (bio),
        CONSTRAINT customer_referrer FOREIGN KEY (referrer) REFERENCES customer (id) ON DELETE SET NULL
    ) COMMENT 'the customers'""",
    "CREATE TABLE country (code char(2) PRIMARY KEY, name varchar(50) NOT NULL, UNIQUE KEY uq_name (name(5)))",
    """CREATE TABLE address (
        customer_id int NOT NULL, kind varchar(10) NOT NULL, country char(2) NOT NULL,
        PRIMARY KEY (customer_id, kind), KEY ix_country (country),
        CONSTRAINT address_customer FOREIGN KEY (customer_id) REFERENCES customer (id) ON DELETE CASCADE,
        CONSTRAINT address_country FOREIGN KEY (country) REFERENCES country (code))""",
    """CREATE TABLE `Order Lines` (
        `Order Id` int NOT NULL, `Line No` int NOT NULL, `Unit Price` decimal(10,2) NOT NULL COMMENT 'per unit',
        customer_id int, kind varchar(10),
        PRIMARY KEY (`Order Id`, `Line No`),
        CONSTRAINT price_positive CHECK (`Unit Price` > 0),
        CONSTRAINT line_address FOREIGN KEY (customer_id, kind) REFERENCES address (customer_id, kind)
            ON DELETE CASCADE ON UPDATE CASCADE)""",
    "CREATE TABLE team (id int PRIMARY KEY, lead_id int)",
    "CREATE TABLE member (id int PRIMARY KEY, team_id int NOT NULL, "
    "CONSTRAINT member_team FOREIGN KEY (team_id) REFERENCES team (id))",
    "ALTER TABLE team ADD CONSTRAINT team_lead FOREIGN KEY (lead_id) REFERENCES member (id) ON DELETE SET NULL",
    "CREATE TABLE counter_empty (id bigint AUTO_INCREMENT PRIMARY KEY, note varchar(10))",
    "ALTER TABLE counter_empty AUTO_INCREMENT = 500",
    "CREATE TABLE audit_log (id bigint unsigned AUTO_INCREMENT PRIMARY KEY, customer_id int, "
    "CONSTRAINT audit_customer FOREIGN KEY (customer_id) REFERENCES customer (id))",
    "CREATE TABLE secret (id int PRIMARY KEY)",
    "CREATE TABLE notes (id int PRIMARY KEY, secret_id int, "
    "CONSTRAINT notes_secret FOREIGN KEY (secret_id) REFERENCES secret (id))",
    """CREATE TABLE defaults (
        id int PRIMARY KEY, path varchar(20) DEFAULT 'a\\\\b', price decimal(5,2) DEFAULT 1.50, delta int DEFAULT -5,
        flags bit(3) DEFAULT b'101', day date DEFAULT '2020-01-01',
        touched datetime(3) DEFAULT current_timestamp(3) ON UPDATE current_timestamp(3),
        word varchar(10) DEFAULT 'NULL', nothing varchar(10) DEFAULT NULL, code varchar(20) DEFAULT (concat('a', 'b')))""",
    "CREATE TABLE place (id int PRIMARY KEY, pos point NOT NULL, SPATIAL KEY ix_pos (pos))",
    "CREATE VIEW vip_customers AS SELECT id, email FROM customer WHERE status = 'vip'",
    "CREATE VIEW vip_emails AS SELECT email FROM vip_customers",
    "CREATE VIEW line_totals AS SELECT `Order Id`, SUM(`Unit Price`) AS `Total Price` FROM `Order Lines` "
    "GROUP BY `Order Id`",
    "CREATE VIEW tmp_view AS SELECT 1 AS one",
    "CREATE VIEW secret_view AS SELECT id FROM secret",
    "CREATE TRIGGER customer_lower BEFORE INSERT ON customer FOR EACH ROW SET NEW.email = lower(NEW.email)",
    "CREATE FUNCTION add_one(x int) RETURNS int DETERMINISTIC RETURN x + 1",
    "INSERT INTO customer (id, email) VALUES (1, 'a@x'), (2, 'b@x'), (10, 'c@x')",
    "DELETE FROM customer WHERE id = 10",
]


@pytest.fixture
def maria(mariadb_db: str) -> DatabaseSchema:
    mariadb_exec(mariadb_db, *MARIADB_SCHEMA)
    return read_mysql(parse_url(mariadb_db), include, exclude_data)


@pytest.mark.mariadb
def test_mariadb_tables_columns_and_filters(maria: DatabaseSchema, mariadb_db: str) -> None:
    assert maria.dialect == "mysql"
    assert maria.source_schema == mariadb_db.rsplit("/", 1)[1]
    assert [t.name for t in maria.tables] == ["Order Lines", "address", "audit_log", "counter_empty", "country",
                                              "customer", "defaults", "member", "notes", "place", "team"]
    assert [t.name for t in maria.tables if not t.copy_data] == ["audit_log"]
    customer = maria.table("customer")
    assert customer.columns == [
        Column(name="id", source_type="int(11)", pg_type="integer", not_null=True, identity=True),
        Column(name="email", source_type="varchar(100)", pg_type="varchar(100)", not_null=True),
        Column(name="name", source_type="varchar(200)", pg_type="varchar(200)", default="'it''s'"),
        Column(name="status", source_type="enum('new','vip','it''s')", pg_type="text", not_null=True,
               default="'new'"),
        Column(name="tags", source_type="set('a','b','c')", pg_type="text"),
        Column(name="created", source_type="timestamp", pg_type="timestamptz", default="CURRENT_TIMESTAMP"),
        Column(name="doc", source_type="json", pg_type="jsonb"),
        Column(name="score", source_type="int(11)", pg_type="integer"),
        Column(name="bio", source_type="text", pg_type="text"),
        Column(name="full_name", source_type="varchar(300)", pg_type="varchar(300)",
               generated="\"name\" || ' ' || \"email\""),
        Column(name="referrer", source_type="int(11)", pg_type="integer"),
    ]
    assert (customer.comment, customer.rows, customer.bytes > 0) == ("the customers", 2, True)
    assert maria.table("Order Lines").columns == [
        Column(name="Order Id", source_type="int(11)", pg_type="integer", not_null=True),
        Column(name="Line No", source_type="int(11)", pg_type="integer", not_null=True),
        Column(name="Unit Price", source_type="decimal(10,2)", pg_type="numeric(10,2)", not_null=True,
               comment="per unit"),
        Column(name="customer_id", source_type="int(11)", pg_type="integer"),
        Column(name="kind", source_type="varchar(10)", pg_type="varchar(10)"),
    ]


@pytest.mark.mariadb
def test_mariadb_literal_defaults_are_carried_and_expressions_reported(maria: DatabaseSchema) -> None:
    defaults = {c.name: c.default for c in maria.table("defaults").columns}
    assert defaults == {"id": None, "path": "'a\\b'", "price": "1.50", "delta": "-5", "flags": "B'101'",
                        "day": "'2020-01-01'", "touched": "CURRENT_TIMESTAMP", "word": "'NULL'", "nothing": None,
                        "code": None}
    skipped = by_what(maria)
    assert skipped["default of defaults.code"] == NotCarried(
        what="default of defaults.code", reason="not a literal: the expression concat('a','b')",
        suggestion="ALTER TABLE \"defaults\" ALTER COLUMN \"code\" SET DEFAULT 'a' || 'b'",
        source_ddl="DEFAULT concat('a','b')")
    assert skipped["default of customer.score"].source_ddl == "DEFAULT (1 + 1)"
    assert skipped["on update of defaults.touched"].source_ddl == "on update current_timestamp(3)"


@pytest.mark.mariadb
def test_mariadb_keys_and_indexes(maria: DatabaseSchema) -> None:
    customer = maria.table("customer")
    assert customer.primary_key == pk("customer", "id")
    assert customer.indexes == [Index(name="customer_referrer", columns=["referrer"]),  # made for the foreign key
                                Index(name="uq_email", columns=["email"], unique=True)]
    assert maria.table("Order Lines").primary_key == pk("Order Lines", "Order Id", "Line No")
    assert maria.table("Order Lines").indexes == [Index(name="line_address", columns=["customer_id", "kind"])]
    assert maria.table("address").primary_key == pk("address", "customer_id", "kind")
    assert maria.table("address").indexes == [Index(name="ix_country", columns=["country"])]
    assert maria.table("country").primary_key == pk("country", "code")
    assert maria.table("country").indexes == []  # its unique index is a prefix one
    assert maria.table("place").indexes == []
    skipped = by_what(maria)
    assert skipped["index customer.ix_name (prefix)"] == NotCarried(
        what="index customer.ix_name (prefix)", reason="PostgreSQL indexes whole values, not the first characters of one",
        suggestion='CREATE INDEX "ix_name" ON "customer" ("name")', source_ddl="KEY `ix_name` (`name`(10))")
    assert skipped["index country.uq_name (prefix)"].suggestion == \
        'CREATE UNIQUE INDEX "uq_name" ON "country" (left("name", 5))'
    assert skipped["index customer.ft_bio (FULLTEXT)"].suggestion == \
        "CREATE INDEX \"ft_bio\" ON \"customer\" USING GIN (to_tsvector('simple', coalesce(\"bio\", '')))"
    assert skipped["index place.ix_pos (SPATIAL)"].source_ddl == "SPATIAL KEY `ix_pos` (`pos`)"


@pytest.mark.mariadb
def test_mariadb_next_values_are_the_sources_own(maria: DatabaseSchema) -> None:
    assert maria.table("customer").next_values == {"id": 11}  # 1, 2 and a deleted 10: not max + 1
    assert maria.table("counter_empty").next_values == {"id": 500}  # empty, advanced by ALTER TABLE
    assert maria.table("audit_log").next_values == {"id": 1}
    assert maria.table("audit_log").columns[0].pg_type == "bigint"  # unsigned, but an identity is an integer
    assert maria.table("team").next_values == {}


@pytest.mark.mariadb
def test_mariadb_checks_enum_and_set(maria: DatabaseSchema) -> None:
    assert maria.table("customer").checks == [  # no check for the JSON column's json_valid
        Check(name="score_positive", expression='("score" >= 0)', columns=["score"]),
        Check(name="customer_status_check", expression="(\"status\" IN ('new', 'vip', 'it''s'))", columns=["status"]),
        Check(name="customer_tags_check", expression="(string_to_array(\"tags\", ',') <@ ARRAY['a', 'b', 'c']::text[])",
              columns=["tags"]),
    ]
    assert maria.table("Order Lines").checks == [
        Check(name="price_positive", expression='("Unit Price" > 0)', columns=["Unit Price"])]


@pytest.mark.mariadb
def test_mariadb_foreign_keys(maria: DatabaseSchema) -> None:
    def fk(name: str, table: str, columns: list[str], ref: str, ref_columns: list[str], on_delete: str = "RESTRICT",
           on_update: str = "RESTRICT") -> ForeignKey:
        return ForeignKey.model_validate(dict(name=name, table=table, columns=columns, ref_table=ref,
                                              ref_columns=ref_columns, on_delete=on_delete, on_update=on_update))

    assert maria.foreign_keys == [
        fk("line_address", "Order Lines", ["customer_id", "kind"], "address", ["customer_id", "kind"], "CASCADE",
           "CASCADE"),
        fk("address_country", "address", ["country"], "country", ["code"]),
        fk("address_customer", "address", ["customer_id"], "customer", ["id"], "CASCADE"),
        fk("audit_customer", "audit_log", ["customer_id"], "customer", ["id"]),
        fk("customer_referrer", "customer", ["referrer"], "customer", ["id"], "SET NULL"),  # itself
        fk("member_team", "member", ["team_id"], "team", ["id"]),  # a cycle: member -> team -> member
        fk("team_lead", "team", ["lead_id"], "member", ["id"], "SET NULL"),
    ]
    assert by_what(maria)["foreign key notes_secret on notes"].reason == \
        "references table secret, which the job leaves out"


@pytest.mark.mariadb
def test_mariadb_views(maria: DatabaseSchema) -> None:
    assert maria.views == [
        View(name="line_totals", columns=["Order Id", "Total Price"], definition=(
            'SELECT "Order Lines"."Order Id" AS "Order Id", SUM("Order Lines"."Unit Price") AS "Total Price" '
            'FROM "Order Lines" GROUP BY "Order Lines"."Order Id"')),
        View(name="vip_customers", columns=["id", "email"], definition=(
            'SELECT "customer"."id" AS "id", "customer"."email" AS "email" FROM "customer" '
            "WHERE \"customer\".\"status\" = 'vip'")),
        View(name="vip_emails", columns=["email"], depends_on=["vip_customers"],
             definition='SELECT "vip_customers"."email" AS "email" FROM "vip_customers"'),
    ]
    skipped = by_what(maria)
    assert skipped["view secret_view"].reason == "reads table secret, which the job leaves out"
    assert not [n for n in maria.not_carried if "tmp_view" in n.what]  # left out by the job: nothing to say


@pytest.mark.mariadb
def test_mariadb_not_carried(maria: DatabaseSchema) -> None:
    assert sorted(by_what(maria)) == [
        "default of customer.score", "default of defaults.code", "foreign key notes_secret on notes",
        "function add_one", "index country.uq_name (prefix)", "index customer.ft_bio (FULLTEXT)",
        "index customer.ix_name (prefix)", "index place.ix_pos (SPATIAL)", "on update of defaults.touched",
        "trigger customer_lower on customer", "view secret_view"]
    skipped = by_what(maria)
    assert skipped["trigger customer_lower on customer"] == NotCarried(
        what="trigger customer_lower on customer", reason="MySQL triggers are not translated",
        source_ddl="CREATE TRIGGER `customer_lower` BEFORE INSERT ON `customer` FOR EACH ROW "
                   "SET NEW.email = lower(NEW.email)")
    assert "FUNCTION `add_one`(x int)" in skipped["function add_one"].source_ddl


# ------------------------------------------------------------------------------------------------ SQLite

SQLITE_TRIGGER = ("CREATE TRIGGER customer_lower AFTER INSERT ON customer BEGIN "
                  "UPDATE customer SET email = lower(new.email) WHERE id = new.id; END")

SQLITE_SCHEMA = [
    """CREATE TABLE customer (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        email TEXT NOT NULL UNIQUE,
        name VARCHAR(50) DEFAULT 'it''s',
        status TEXT NOT NULL DEFAULT 'new' CHECK (status IN ('new', 'vip')),
        created TEXT DEFAULT CURRENT_TIMESTAMP,
        made TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
        score INTEGER DEFAULT -1,
        Upper_Email TEXT GENERATED ALWAYS AS (upper(EMAIL)) VIRTUAL,
        referrer INTEGER REFERENCES customer (id) ON DELETE SET NULL,
        CONSTRAINT score_positive CHECK (Score >= -1),
        CHECK (email GLOB '*@*'))""",
    "CREATE TABLE country (code TEXT PRIMARY KEY, name TEXT NOT NULL) WITHOUT ROWID",
    """CREATE TABLE address (
        customer_id INTEGER NOT NULL REFERENCES customer ON DELETE CASCADE,
        kind TEXT NOT NULL,
        country TEXT NOT NULL REFERENCES country (code),
        PRIMARY KEY (customer_id, kind))""",
    "CREATE INDEX ix_address_country ON address (country)",
    """CREATE TABLE [Order Lines] (
        "Order Id" INTEGER NOT NULL, "Line No" INTEGER NOT NULL,
        "Unit Price" NUMERIC(10,2) NOT NULL CHECK ("Unit Price" > 0),
        customer_id INTEGER, kind TEXT,
        PRIMARY KEY ("Order Id", "Line No"),
        FOREIGN KEY (customer_id, kind) REFERENCES address ON DELETE CASCADE ON UPDATE CASCADE)""",
    "CREATE TABLE team (id INTEGER PRIMARY KEY, lead_id INTEGER REFERENCES member (id) ON DELETE SET NULL)",
    "CREATE TABLE member (id INTEGER PRIMARY KEY, team_id INTEGER NOT NULL REFERENCES team (id))",
    "CREATE TABLE plain_rowid (id INTEGER PRIMARY KEY, note)",
    "CREATE TABLE counter_empty (id INTEGER PRIMARY KEY AUTOINCREMENT, note TEXT)",
    "CREATE TABLE audit_log (id INTEGER PRIMARY KEY, customer_id INTEGER REFERENCES customer (id))",
    "CREATE TABLE secret (id INTEGER PRIMARY KEY)",
    "CREATE TABLE notes (id INTEGER PRIMARY KEY, secret_id INTEGER REFERENCES secret (id))",
    "CREATE INDEX ix_customer_lower ON customer (lower(email))",
    "CREATE INDEX ix_customer_vip ON customer (name) WHERE status = 'vip'",
    "CREATE UNIQUE INDEX ux_customer_name ON customer (name, referrer)",
    "CREATE VIEW vip_customers AS SELECT c.id, c.Email FROM Customer AS c WHERE c.status = 'vip'",
    "CREATE VIEW vip_emails (address) AS SELECT email FROM vip_customers",
    'CREATE VIEW line_totals AS SELECT "Order Id", SUM("Unit Price") FROM "Order Lines" GROUP BY "Order Id"',
    "CREATE VIEW tmp_view AS SELECT 1 AS one",
    "CREATE VIEW secret_view AS SELECT id FROM secret",
    "CREATE VIEW broken AS SELECT gone FROM no_such_table",
    "CREATE VIRTUAL TABLE docs USING fts5(body)",  # and its shadow tables docs_data, docs_idx, …
    SQLITE_TRIGGER,
    "INSERT INTO customer (id, email) VALUES (1, 'a@x'), (2, 'b@x'), (10, 'c@x')",
    "DELETE FROM customer WHERE id = 10",
    "INSERT INTO plain_rowid (id, note) VALUES (1, 5), (2, 6), (10, 7)",
    "DELETE FROM plain_rowid WHERE id = 10",
    "INSERT INTO counter_empty (id) VALUES (499)",
    "DELETE FROM counter_empty",
]


@pytest.fixture
def lite(tmp_path: Path) -> Iterator[DatabaseSchema]:
    path = tmp_path / "catalog.db"
    sqlite_exec(path, *SQLITE_SCHEMA)
    yield read_sqlite(parse_url(f"sqlite://{path}"), include, exclude_data)
    path.unlink()


def test_sqlite_tables_columns_and_filters(lite: DatabaseSchema) -> None:
    assert (lite.dialect, lite.source_schema) == ("sqlite", "")
    assert [t.name for t in lite.tables] == ["Order Lines", "address", "audit_log", "counter_empty", "country",
                                             "customer", "member", "notes", "plain_rowid", "team"]
    assert [t.name for t in lite.tables if not t.copy_data] == ["audit_log"]
    customer = lite.table("customer")
    assert customer.columns == [
        Column(name="id", source_type="INTEGER", pg_type="bigint", not_null=True, identity=True),
        Column(name="email", source_type="TEXT", pg_type="text", not_null=True),
        Column(name="name", source_type="VARCHAR(50)", pg_type="text", default="'it''s'"),
        Column(name="status", source_type="TEXT", pg_type="text", not_null=True, default="'new'"),
        Column(name="created", source_type="TEXT", pg_type="text"),  # CURRENT_TIMESTAMP as text: reported
        Column(name="made", source_type="TIMESTAMP", pg_type="timestamp", default="CURRENT_TIMESTAMP"),
        Column(name="score", source_type="INTEGER", pg_type="bigint", default="-1"),
        Column(name="Upper_Email", source_type="TEXT", pg_type="text", generated='UPPER("email")'),
        Column(name="referrer", source_type="INTEGER", pg_type="bigint"),
    ]
    assert (customer.rows, customer.bytes) == (2, 0)
    assert lite.table("Order Lines").columns == [
        Column(name="Order Id", source_type="INTEGER", pg_type="bigint", not_null=True),
        Column(name="Line No", source_type="INTEGER", pg_type="bigint", not_null=True),
        Column(name="Unit Price", source_type="NUMERIC(10,2)", pg_type="numeric(10,2)", not_null=True),
        Column(name="customer_id", source_type="INTEGER", pg_type="bigint"),
        Column(name="kind", source_type="TEXT", pg_type="text"),
    ]
    assert lite.table("plain_rowid").columns[1] == Column(name="note", source_type="", pg_type="bigint")  # by values


def test_sqlite_keys_and_indexes(lite: DatabaseSchema) -> None:
    customer = lite.table("customer")
    assert customer.primary_key == pk("customer", "id")
    assert customer.indexes == [Index(name="customer_email_key", columns=["email"], unique=True),
                                Index(name="ux_customer_name", columns=["name", "referrer"], unique=True)]
    assert lite.table("country").primary_key == pk("country", "code")  # WITHOUT ROWID: a text key, no identity
    assert not lite.table("country").columns[0].identity
    assert lite.table("address").primary_key == pk("address", "customer_id", "kind")
    assert lite.table("address").indexes == [Index(name="ix_address_country", columns=["country"])]
    assert lite.table("Order Lines").primary_key == pk("Order Lines", "Order Id", "Line No")
    skipped = by_what(lite)
    assert skipped["index customer.ix_customer_lower (expression)"] == NotCarried(
        what="index customer.ix_customer_lower (expression)", reason="SQLite expression indexes are not carried",
        suggestion='CREATE INDEX "ix_customer_lower" ON "customer"(LOWER("email") NULLS FIRST)',
        source_ddl="CREATE INDEX ix_customer_lower ON customer (lower(email))")
    assert skipped["index customer.ix_customer_vip (partial)"].source_ddl == \
        "CREATE INDEX ix_customer_vip ON customer (name) WHERE status = 'vip'"


def test_sqlite_next_values_follow_sqlites_own_rule(lite: DatabaseSchema) -> None:
    assert lite.table("customer").next_values == {"id": 11}  # AUTOINCREMENT: after the highest ever given
    assert lite.table("plain_rowid").next_values == {"id": 3}  # a plain rowid: after the highest there is
    assert lite.table("counter_empty").next_values == {"id": 500}  # empty, but 499 was given
    assert lite.table("team").next_values == {"id": 1}
    assert lite.table("address").next_values == {}  # a composite key is no rowid


def test_sqlite_checks(lite: DatabaseSchema) -> None:
    assert lite.table("customer").checks == [
        Check(name="customer_status_check", expression="(\"status\" IN ('new', 'vip'))", columns=["status"]),
        Check(name="score_positive", expression='("score" >= -1)', columns=["score"]),
    ]
    assert lite.table("Order Lines").checks == [
        Check(name="Order Lines_Unit Price_check", expression='("Unit Price" > 0)', columns=["Unit Price"])]
    assert by_what(lite)["a check constraint on customer"] == NotCarried(
        what="a check constraint on customer", reason="its expression does not translate (GLOB has no PostgreSQL "
        "translation)", source_ddl="CHECK (email GLOB '*@*')")


def test_sqlite_foreign_keys(lite: DatabaseSchema) -> None:
    def fk(table: str, columns: list[str], ref: str, ref_columns: list[str], on_delete: str = "NO ACTION",
           on_update: str = "NO ACTION") -> ForeignKey:
        return ForeignKey.model_validate(dict(name=f"{table}_{'_'.join(columns)}_fkey", table=table, columns=columns,
                                              ref_table=ref, ref_columns=ref_columns, on_delete=on_delete,
                                              on_update=on_update))

    assert lite.foreign_keys == [
        fk("Order Lines", ["customer_id", "kind"], "address", ["customer_id", "kind"], "CASCADE", "CASCADE"),
        fk("address", ["country"], "country", ["code"]),
        fk("address", ["customer_id"], "customer", ["id"], "CASCADE"),  # no parent columns: its primary key
        fk("audit_log", ["customer_id"], "customer", ["id"]),
        fk("customer", ["referrer"], "customer", ["id"], "SET NULL"),
        fk("member", ["team_id"], "team", ["id"]),
        fk("team", ["lead_id"], "member", ["id"], "SET NULL"),
    ]
    assert by_what(lite)["foreign key notes_secret_id_fkey on notes"].reason == \
        "references table secret, which the job leaves out"


def test_sqlite_views(lite: DatabaseSchema) -> None:
    assert lite.views == [
        View(name="line_totals", columns=["Order Id", 'SUM("Unit Price")'], definition=(
            'SELECT "Order Id", SUM("Unit Price") AS "SUM(""Unit Price"")" FROM "Order Lines" GROUP BY "Order Id"')),
        View(name="vip_customers", columns=["id", "email"],
             definition='SELECT "c"."id", "c"."email" FROM "customer" AS "c" WHERE "c"."status" = \'vip\''),
        View(name="vip_emails", columns=["address"], depends_on=["vip_customers"],
             definition='SELECT "email" AS "address" FROM "vip_customers"'),
    ]
    skipped = by_what(lite)
    assert skipped["view secret_view"].reason == "reads table secret, which the job leaves out"
    assert skipped["view broken"].reason.startswith("SQLite cannot read it (")
    assert not [n for n in lite.not_carried if "tmp_view" in n.what]


def test_sqlite_not_carried(lite: DatabaseSchema) -> None:
    assert sorted(by_what(lite)) == [
        "a check constraint on customer", "default of customer.created", "foreign key notes_secret_id_fkey on notes",
        "index customer.ix_customer_lower (expression)", "index customer.ix_customer_vip (partial)",
        "trigger customer_lower on customer", "view broken", "view secret_view", "virtual table docs"]
    skipped = by_what(lite)
    assert skipped["default of customer.created"].suggestion == (
        'ALTER TABLE "customer" ALTER COLUMN "created" SET DEFAULT '
        "to_char(CURRENT_TIMESTAMP AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS')")
    assert skipped["trigger customer_lower on customer"].source_ddl == SQLITE_TRIGGER
    assert skipped["virtual table docs"].source_ddl == "CREATE VIRTUAL TABLE docs USING fts5(body)"
