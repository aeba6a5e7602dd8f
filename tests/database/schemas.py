"""Multi-table source schemas of our own making, for whole-database jobs: keys of every shape, a self-reference,
a foreign key cycle, auto-increment with gaps and an empty table, types, checks, views on views, odd names."""

from __future__ import annotations

PG_SCHEMA = [
    "CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy')",
    "CREATE DOMAIN posint AS integer CHECK (VALUE > 0)",
    "CREATE SEQUENCE ticket_no START 100 INCREMENT 5",
    """CREATE TABLE customers (
        id serial PRIMARY KEY, email text NOT NULL UNIQUE, name text NOT NULL, feeling mood DEFAULT 'ok',
        country char(2) NOT NULL DEFAULT 'NZ', created_at timestamptz NOT NULL DEFAULT now())""",
    "COMMENT ON TABLE customers IS 'people who buy'",
    "COMMENT ON COLUMN customers.email IS 'unique login'",
    """CREATE TABLE orders (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, customer_id int NOT NULL
            REFERENCES customers ON DELETE CASCADE, amount numeric(12,2) NOT NULL CHECK (amount >= 0),
        qty posint NOT NULL, total numeric GENERATED ALWAYS AS (amount * qty) STORED,
        note text, ticket bigint DEFAULT nextval('ticket_no'))""",
    "CREATE INDEX orders_customer_idx ON orders (customer_id)",
    "CREATE INDEX orders_note_lower_idx ON orders (lower(note)) WHERE note IS NOT NULL",
    """CREATE TABLE "Order Lines" (
        order_id bigint NOT NULL REFERENCES orders ON DELETE CASCADE, line_no int NOT NULL,
        "Unit Price" numeric(10,2) NOT NULL, sku text NOT NULL, PRIMARY KEY (order_id, line_no))""",
    """CREATE TABLE employees (
        id int PRIMARY KEY, name text NOT NULL, manager_id int REFERENCES employees (id) ON DELETE SET NULL)""",
    "CREATE TABLE teams (id int PRIMARY KEY, lead_id int)",
    "CREATE TABLE members (id int PRIMARY KEY, team_id int NOT NULL REFERENCES teams DEFERRABLE INITIALLY DEFERRED)",
    "ALTER TABLE teams ADD CONSTRAINT teams_lead_fk FOREIGN KEY (lead_id) REFERENCES members (id)",
    "CREATE TABLE countries (code char(2) PRIMARY KEY, name text NOT NULL UNIQUE)",
    "CREATE TABLE empty_things (id serial PRIMARY KEY, label text)",
    "CREATE TABLE audit_log (id bigserial PRIMARY KEY, what text NOT NULL)",
    """CREATE TABLE measurements (id int NOT NULL, taken date NOT NULL, value double precision,
        PRIMARY KEY (id, taken)) PARTITION BY RANGE (taken)""",
    "CREATE TABLE measurements_2025 PARTITION OF measurements FOR VALUES FROM ('2025-01-01') TO ('2026-01-01')",
    "CREATE TABLE measurements_2026 PARTITION OF measurements FOR VALUES FROM ('2026-01-01') TO ('2027-01-01')",
    """CREATE FUNCTION order_total(o orders) RETURNS numeric LANGUAGE sql STABLE AS $$ SELECT o.amount * o.qty $$""",
    """CREATE FUNCTION log_order() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN INSERT INTO audit_log (what) VALUES ('order ' || NEW.id); RETURN NEW; END $$""",
    "CREATE TRIGGER orders_log AFTER INSERT ON orders FOR EACH ROW EXECUTE FUNCTION log_order()",
    """CREATE VIEW customer_orders AS SELECT c.id, c.email, count(o.id) AS orders, sum(o.amount) AS spent
        FROM customers c LEFT JOIN orders o ON o.customer_id = c.id GROUP BY c.id, c.email""",
    "CREATE VIEW big_spenders AS SELECT id, email FROM customer_orders WHERE spent > 100",
    "CREATE MATERIALIZED VIEW spend_by_country AS SELECT country, count(*) AS n FROM customers GROUP BY country",
    "CREATE TABLE scratch (id int PRIMARY KEY, junk text)",
    "CREATE TABLE vehicles (id int PRIMARY KEY, name text NOT NULL)",  # inheritance: read with ONLY
    "CREATE TABLE cars (doors int NOT NULL DEFAULT 4) INHERITS (vehicles)",
    """CREATE TABLE "we""ird" (id int PRIMARY KEY, "it's" text, "Mixed Case" int)""",
    # rows: keys with gaps, a sequence advanced past its rows, an empty table, NULL foreign keys
    """INSERT INTO customers (email, name, feeling, country) SELECT 'c' || g || '@x.org', 'Name ' || g,
        (ARRAY['sad','ok','happy'])[1 + g % 3]::mood, (ARRAY['NZ','AU','FR'])[1 + g % 3] FROM generate_series(1, 300) g""",
    "DELETE FROM customers WHERE id IN (7, 300)",
    "SELECT setval('customers_id_seq', 350)",
    """INSERT INTO orders (customer_id, amount, qty, note) SELECT 1 + g % 298, (g % 500) / 3.0, 1 + g % 4,
        CASE WHEN g % 5 = 0 THEN NULL ELSE 'Note ' || g END FROM generate_series(1, 3000) g WHERE 1 + g % 298 <> 7""",
    """INSERT INTO "Order Lines" SELECT o.id, l, 1.5 * l, 'SKU-' || l FROM orders o, generate_series(1, 3) l
        WHERE o.id % 2 = 0""",
    "INSERT INTO employees VALUES (1, 'Boss', NULL), (2, 'Mid', 1), (3, 'Low', 2), (4, 'Other', 1)",
    "INSERT INTO teams VALUES (1, NULL)", "INSERT INTO members VALUES (10, 1), (11, 1)",
    "UPDATE teams SET lead_id = 10",
    "INSERT INTO countries VALUES ('NZ', 'New Zealand'), ('AU', 'Australia'), ('FR', 'France')",
    "INSERT INTO measurements SELECT g, DATE '2025-06-01' + g, g * 0.5 FROM generate_series(1, 400) g",
    "INSERT INTO scratch VALUES (1, 'x')",
    "INSERT INTO vehicles VALUES (1, 'bike'), (2, 'boat')",
    "INSERT INTO cars VALUES (3, 'mini', 2), (4, 'van', 5)",
    """INSERT INTO "we""ird" VALUES (1, 'a"b', 7), (2, NULL, NULL)""",
    "SELECT nextval('ticket_no')",
    "REFRESH MATERIALIZED VIEW spend_by_country",
    "ANALYZE",
]
