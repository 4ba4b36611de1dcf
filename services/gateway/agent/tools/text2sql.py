"""``text2sql`` and ``describe_database``: the model reads a registered database's schema, then
runs one SELECT it wrote; the answer shows the SQL that ran and the rows (bounded).

Databases are registered by an admin (``ZHIKU_GATEWAY_AGENT_SQL_DATABASES`` or
``/v1/agent/databases``); the model only names one. The statement passes :func:`~services.gateway.agent.tools.sql_guard.check_select`
(a parser check) and then runs on a read-only connection with a timeout and a row limit
(:mod:`~services.gateway.agent.tools.sql_databases`). Rows come from outside the prompt's
authors, so the result is ``external``: shown to the model as data.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import Field

from services.gateway.agent.tools.base import (
    Arguments,
    ToolContext,
    ToolError,
    ToolResult,
    parameters_of,
    parse_arguments,
)
from services.gateway.agent.tools.sql_databases import RegisteredDatabase
from services.gateway.agent.tools.sql_directory import SqlDatabaseDirectory
from services.gateway.agent.tools.sql_guard import check_select

MAX_SQL_CHARS = 10_000


class DescribeArguments(Arguments):
    database: str = Field(description="Name of the registered database.")


class QueryArguments(Arguments):
    database: str = Field(description="Name of the registered database.")
    sql: str = Field(
        description="One read-only SELECT statement (WITH ... SELECT allowed) in the database's dialect.",
        min_length=1,
        max_length=MAX_SQL_CHARS,
    )


class _SqlTool:
    def __init__(self, directory: SqlDatabaseDirectory) -> None:
        self.directory = directory

    async def _database(self, name: str) -> RegisteredDatabase:
        databases = await self.directory.current()
        database = databases.get(name)
        if database is None:
            known = ", ".join(sorted(databases)) or "none"
            raise ToolError(f"unknown database {name!r}; registered databases: {known}")
        return database

    def _listing(self) -> str:
        known = self.directory.known()
        return ", ".join(f"{name} ({db.backend})" for name, db in sorted(known.items())) or "none yet"

    def _parameters(self, model: type[Arguments]) -> dict[str, Any]:
        """``model``'s schema; ``database`` limited to the known names when there are some."""
        schema = parameters_of(model)
        names = sorted(self.directory.known())
        if names:
            schema["properties"]["database"]["enum"] = names
        return schema


class DescribeDatabaseTool(_SqlTool):
    name = "describe_database"

    @property
    def description(self) -> str:
        return (
            "List the tables and views of a registered SQL database with their columns and types, "
            f"to write a query for text2sql. Databases: {self._listing()}."
        )

    @property
    def parameters(self) -> dict[str, Any]:
        return self._parameters(DescribeArguments)

    async def run(self, arguments: dict[str, Any], context: ToolContext) -> ToolResult:
        database = await self._database(parse_arguments(DescribeArguments, arguments).database)
        tables = await database.describe()
        lines = [f"Database {database.name} ({database.backend}, SQL dialect {database.dialect}):"]
        for table in tables:
            columns = ", ".join(
                f"{column.name} {column.type}{'' if column.nullable else ' NOT NULL'}" for column in table.columns
            )
            lines.append(f"{table.kind} {table.name}({columns})")
        if not tables:
            lines.append("(no tables)")
        data = {
            "database": database.name,
            "backend": database.backend,
            "tables": [
                {
                    "name": table.name,
                    "kind": table.kind,
                    "columns": [
                        {"name": c.name, "type": c.type, "nullable": c.nullable} for c in table.columns
                    ],
                }
                for table in tables
            ],
        }
        return ToolResult(
            text="\n".join(lines), data=data, external=True, summary=f"{len(tables)} table(s) in {database.name}"
        )


class Text2SqlTool(_SqlTool):
    name = "text2sql"

    @property
    def description(self) -> str:
        return (
            "Run one read-only SELECT on a registered SQL database and return the rows (at most "
            f"a few hundred). Call describe_database first to learn the tables. Databases: {self._listing()}."
        )

    @property
    def parameters(self) -> dict[str, Any]:
        return self._parameters(QueryArguments)

    async def run(self, arguments: dict[str, Any], context: ToolContext) -> ToolResult:
        args = parse_arguments(QueryArguments, arguments)
        database = await self._database(args.database)
        sql = check_select(args.sql, database.dialect)
        result = await database.query(sql)
        shown = "\n".join(json.dumps(row, ensure_ascii=False) for row in result.rows)
        more = f"\n(only the first {len(result.rows)} rows are shown)" if result.truncated else ""
        text = (
            f"SQL run on {database.name}:\n{sql}\n\ncolumns: {json.dumps(result.columns, ensure_ascii=False)}\n"
            f"{len(result.rows)} row(s):\n{shown}{more}"
        )
        data = {
            "database": database.name,
            "sql": sql,
            "columns": result.columns,
            "rows": result.rows,
            "truncated": result.truncated,
        }
        rows = f"{len(result.rows)}{'+' if result.truncated else ''} row(s)"
        return ToolResult(text=text, data=data, external=True, summary=f"{rows} from {database.name}: {sql}")
