"""``text2sql`` and ``describe_database`` against the real PostgreSQL (a schema of its own,
dropped afterwards) and a real SQLite file: SELECTs run and show their SQL; every kind of write
is refused by the parser check with a clear error, and by the read-only connection even when
the check is bypassed; long queries are cut by the timeout; rows are bounded."""

from __future__ import annotations

import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from sqlalchemy import create_engine, text

from services.gateway.agent.tools import ToolContext, ToolError, build_registry
from services.gateway.agent.tools.registry import ToolRegistry
from services.gateway.config import GatewaySettings

PG_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
ROWS = [
    (1, "Ada", "120.50", "2026-01-05"),
    (2, "Lin", "80.00", "2026-01-09"),
    (3, "Ada", "42.25", "2026-02-01"),
]
TIMEOUT_S = 0.5
MAX_ROWS = 2


@pytest.fixture(scope="module")
def pg_schema() -> Iterator[str]:
    schema = f"agent_t2s_{uuid.uuid4().hex[:10]}"
    engine = create_engine(PG_ADMIN_URL)
    with engine.begin() as connection:
        connection.execute(text(f"CREATE SCHEMA {schema}"))
        connection.execute(text(f"CREATE SEQUENCE {schema}.order_numbers"))
        connection.execute(
            text(
                f"CREATE TABLE {schema}.orders "
                "(id int PRIMARY KEY, customer text NOT NULL, amount numeric, placed date)"
            )
        )
        for row in ROWS:
            connection.execute(
                text(f"INSERT INTO {schema}.orders VALUES (:id, :customer, :amount, :placed)"),
                dict(zip(("id", "customer", "amount", "placed"), row, strict=True)),
            )
    try:
        yield schema
    finally:
        with engine.begin() as connection:
            connection.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        engine.dispose()


@pytest.fixture(scope="module")
def sqlite_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("text2sql") / "shop.db"
    with sqlite3.connect(path) as connection:
        connection.execute(
            "CREATE TABLE orders "
            "(id INTEGER PRIMARY KEY, customer TEXT NOT NULL, amount NUMERIC, placed DATE)"
        )
        connection.executemany("INSERT INTO orders VALUES (?, ?, ?, ?)", ROWS)
    return path


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def tools(pg_schema: str, sqlite_file: Path) -> AsyncIterator[ToolRegistry]:
    settings = GatewaySettings(
        catalog_url="sqlite:///unused.db",
        agent_tools=["text2sql"],
        agent_sql_timeout_s=TIMEOUT_S,
        agent_sql_max_rows=MAX_ROWS,
        agent_sql_databases={
            "pg": f"{PG_ADMIN_URL}?options=-csearch_path%3D{pg_schema}",
            "lite": f"sqlite:///{sqlite_file}",
        },
    )
    registry = build_registry(settings)
    yield registry
    registry.close()


pytestmark = pytest.mark.asyncio(loop_scope="module")
CONTEXT = ToolContext(settings=GatewaySettings(catalog_url="sqlite:///unused.db"))
DATABASES = ["pg", "lite"]


async def run_sql(tools: ToolRegistry, database: str, sql: str):
    return await tools.run("text2sql", {"database": database, "sql": sql}, CONTEXT)


@pytest.mark.parametrize("database", DATABASES)
async def test_describe_lists_tables_columns_and_types(tools: ToolRegistry, database: str) -> None:
    result = await tools.run("describe_database", {"database": database}, CONTEXT)
    (orders,) = [table for table in result.data["tables"] if table["name"] == "orders"]
    columns = {column["name"]: column for column in orders["columns"]}
    assert list(columns) == ["id", "customer", "amount", "placed"]
    assert columns["customer"]["nullable"] is False and "TEXT" in columns["customer"]["type"].upper()
    assert "NUMERIC" in columns["amount"]["type"].upper()
    assert "table orders(id " in result.text and "customer TEXT NOT NULL" in result.text.replace(
        "text", "TEXT"
    )
    assert result.external


@pytest.mark.parametrize("database", DATABASES)
async def test_select_runs_and_shows_the_sql_it_ran(tools: ToolRegistry, database: str) -> None:
    sql = "SELECT customer, SUM(amount) AS total FROM orders GROUP BY customer ORDER BY customer;"
    result = await run_sql(tools, database, sql)
    assert result.data["sql"] == sql.rstrip(";")
    assert result.data["columns"] == ["customer", "total"]
    assert [row[0] for row in result.data["rows"]] == ["Ada", "Lin"]
    assert [float(row[1]) for row in result.data["rows"]] == [162.75, 80.0]
    assert result.data["truncated"] is False
    assert f"SQL run on {database}:\n{sql.rstrip(';')}" in result.text and result.external
    assert result.short() == f"2 row(s) from {database}: {sql.rstrip(';')}"
    with_cte = await run_sql(
        tools, database, "WITH big AS (SELECT * FROM orders WHERE amount > 50) SELECT count(*) AS n FROM big"
    )
    assert with_cte.data["rows"] == [[2]]
    percent = await run_sql(
        tools, database, "SELECT customer, '100%' AS share FROM orders WHERE customer LIKE 'A%' LIMIT 1"
    )
    assert percent.data["rows"] == [["Ada", "100%"]] and "LIKE 'A%'" in percent.data["sql"]


@pytest.mark.parametrize("database", DATABASES)
async def test_rows_are_bounded(tools: ToolRegistry, database: str) -> None:
    result = await run_sql(tools, database, "SELECT id, placed FROM orders ORDER BY id")
    assert result.data["rows"] == [[1, "2026-01-05"], [2, "2026-01-09"]]
    assert result.data["truncated"] is True and f"only the first {MAX_ROWS} rows" in result.text


WRITES = [
    ("INSERT INTO orders VALUES (9, 'Eve', 1, '2026-03-01')", "INSERT is refused"),
    ("UPDATE orders SET amount = 0", "UPDATE is refused"),
    ("DELETE FROM orders", "DELETE is refused"),
    ("DROP TABLE orders", "DROP is refused"),
    ("SELECT 1; DELETE FROM orders", "exactly one SELECT statement (got 2 statements)"),
    ("SELECT * FROM orders; SELECT 1", "exactly one SELECT statement (got 2 statements)"),
    ("COPY orders TO STDOUT", "COPY is refused"),
    ("SELECT * INTO stolen FROM orders", "SELECT ... INTO is refused"),
    ("WITH gone AS (DELETE FROM orders RETURNING *) SELECT * FROM gone", "DELETE is refused"),
    ("WITH x AS (UPDATE orders SET amount = 0 RETURNING id) SELECT id FROM x", "UPDATE is refused"),
    ("CREATE TABLE t AS SELECT * FROM orders", "CREATE is refused"),
    ("SELECT * FROM orders FOR UPDATE", "FOR UPDATE"),
    ("PRAGMA query_only = OFF", "PRAGMA is refused"),
    ("SET default_transaction_read_only = off", "SET is refused"),
    ("BEGIN", "transaction control is refused"),
    ("SELECT set_config('statement_timeout', '0', false)", "set_config() is not allowed"),
    ("SELEC * FROM orders", "the SQL does not parse"),
]


@pytest.mark.parametrize("database", DATABASES)
@pytest.mark.parametrize(("sql", "message"), WRITES)
async def test_writes_are_refused_with_a_clear_error(
    tools: ToolRegistry, database: str, sql: str, message: str
) -> None:
    with pytest.raises(ToolError) as raised:
        await run_sql(tools, database, sql)
    assert message in str(raised.value)


@pytest.mark.parametrize("database", DATABASES)
async def test_the_connection_itself_is_read_only(tools: ToolRegistry, database: str) -> None:
    """Past the parser check (called directly here), the database refuses writes on its own."""
    db = tools.sql_databases.configured[database]
    writes = {
        # PostgreSQL takes rows through a cursor, which refuses anything but a query; a query
        # that writes (a sequence step) is refused by the read-only transaction.
        "pg": ["SELECT nextval('order_numbers')"],
        "lite": ["INSERT INTO orders VALUES (9, 'Eve', 1, '2026-03-01')", "DELETE FROM orders"],
    }[database]
    for sql in writes:
        with pytest.raises(ToolError, match=r"the database refused the query: .*(read-only|readonly)"):
            await db.query(sql)
    after = await run_sql(tools, database, "SELECT count(*) FROM orders")
    assert after.data["rows"] == [[3]]


async def test_postgres_statement_timeout_cuts_a_long_query(tools: ToolRegistry) -> None:
    started = time.monotonic()
    with pytest.raises(ToolError, match=f"ran longer than {TIMEOUT_S:g} s and was cancelled"):
        await run_sql(tools, "pg", "SELECT pg_sleep(30)")
    assert time.monotonic() - started < 10
    assert (await run_sql(tools, "pg", "SELECT 1 AS one")).data["rows"] == [[1]]  # connection reusable


async def test_sqlite_deadline_interrupts_a_long_query(tools: ToolRegistry) -> None:
    endless = (
        "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 5000000000) "
        "SELECT count(*) FROM n"
    )
    started = time.monotonic()
    with pytest.raises(ToolError, match=f"ran longer than {TIMEOUT_S:g} s and was cancelled"):
        await run_sql(tools, "lite", endless)
    assert time.monotonic() - started < 10
    assert (await run_sql(tools, "lite", "SELECT 1 AS one")).data["rows"] == [[1]]


async def test_unknown_database_and_bad_arguments(tools: ToolRegistry) -> None:
    with pytest.raises(ToolError, match="unknown database 'hr'; registered databases: lite, pg"):
        await run_sql(tools, "hr", "SELECT 1")
    with pytest.raises(ToolError, match="invalid arguments: sql: Field required"):
        await tools.run("text2sql", {"database": "pg"}, CONTEXT)
    with pytest.raises(ToolError, match=r"does not exist|no such table"):
        await run_sql(tools, "pg", "SELECT * FROM salaries")
