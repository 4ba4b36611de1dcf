"""Only one read-only SELECT reaches a registered database: decided by parsing, not matching.

``sqlglot`` parses the statement in the database's dialect. Accepted: exactly one statement
whose root is a query (``SELECT``, ``WITH ... SELECT``, ``UNION``/``INTERSECT``/``EXCEPT`` of
those, ``VALUES``). Refused anywhere in the tree: data changes (``INSERT``, ``UPDATE``,
``DELETE``, ``MERGE``, including inside a CTE), DDL, ``COPY``, ``SELECT ... INTO``, row locks
(``FOR UPDATE``), and any statement sqlglot only knows as an opaque command (``VACUUM``,
``CALL``, ``EXPLAIN ANALYZE``...), and functions that change the session or reach files
(``set_config``, ``pg_read_file``, ``lo_import``...). The connection is read-only as well (``sql_databases``):
this check gives the model a clear message, the database enforces it.
"""

from __future__ import annotations

import logging

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError, TokenError

from services.gateway.agent.tools.base import ToolError

# sqlglot logs a warning whenever it falls back to an opaque command; the refusal says it.
logging.getLogger("sqlglot").setLevel(logging.ERROR)

QUERY_ROOTS: tuple[type[exp.Expression], ...] = (exp.Select, exp.SetOperation, exp.Values, exp.Subquery)
# Nodes that change data or schema, or are not understood: refused wherever they appear.
FORBIDDEN: tuple[tuple[type[exp.Expression], str], ...] = (
    (exp.Insert, "INSERT"),
    (exp.Update, "UPDATE"),
    (exp.Delete, "DELETE"),
    (exp.Merge, "MERGE"),
    (exp.Create, "CREATE"),
    (exp.Drop, "DROP"),
    (exp.Alter, "ALTER"),
    (exp.TruncateTable, "TRUNCATE"),
    (exp.Copy, "COPY"),
    (exp.Command, "this statement"),
    (exp.Set, "SET"),
    (exp.Transaction, "transaction control"),
    (exp.Commit, "COMMIT"),
    (exp.Rollback, "ROLLBACK"),
    (exp.Into, "SELECT ... INTO"),
    (exp.Lock, "row locks (FOR UPDATE / FOR SHARE)"),
    (exp.LoadData, "LOAD DATA"),
    (exp.Pragma, "PRAGMA"),
    (exp.Use, "USE"),
)

# Functions that change the session or the server, or reach files and other servers. The
# read-only transaction stops writes, not these; a database account that may only read is
# still the real protection (the docs say so).
DENIED_FUNCTIONS = frozenset(
    {
        "set_config",
        "pg_terminate_backend",
        "pg_cancel_backend",
        "pg_reload_conf",
        "pg_rotate_logfile",
        "pg_read_file",
        "pg_read_binary_file",
        "pg_ls_dir",
        "pg_stat_file",
        "lo_import",
        "lo_export",
        "lo_unlink",
        "dblink",
        "dblink_exec",
        "dblink_connect",
        "pg_advisory_lock",
        "pg_advisory_xact_lock",
        "load_extension",
        "readfile",
        "writefile",
        "edit",
    }
)

DIALECTS = {"postgresql": "postgres", "sqlite": "sqlite", "mysql": "mysql"}


def check_select(sql: str, dialect: str) -> str:
    """``sql`` if it is a single read-only query in ``dialect`` (sqlglot's dialect name), else
    :class:`ToolError` naming what is refused. The text is returned as given (trailing ``;``
    stripped), so the SQL shown is the SQL run."""
    text = sql.strip().rstrip(";").strip()
    if not text:
        raise ToolError("the SQL query is empty")
    try:
        statements = [statement for statement in sqlglot.parse(text, read=dialect) if statement is not None]
    except (ParseError, TokenError) as error:
        raise ToolError(f"the SQL does not parse: {_first_line(str(error))}") from None
    if len(statements) != 1:
        raise ToolError(f"send exactly one SELECT statement (got {len(statements)} statements)")
    statement = statements[0]
    for node in statement.walk():
        for kind, what in FORBIDDEN:
            if isinstance(node, kind):
                if isinstance(node, exp.Command):
                    what = str(node.this).upper() or what
                raise ToolError(f"only a read-only SELECT is allowed: {what} is refused")
        if isinstance(node, exp.Anonymous) and node.name.lower() in DENIED_FUNCTIONS:
            raise ToolError(f"the function {node.name}() is not allowed in text2sql queries")
    if not isinstance(statement, QUERY_ROOTS):
        raise ToolError(f"only a read-only SELECT is allowed: {statement.key.upper()} is refused")
    if isinstance(statement, exp.Select) and statement.args.get("into") is not None:
        raise ToolError("only a read-only SELECT is allowed: SELECT ... INTO is refused")
    return text


def _first_line(message: str) -> str:
    return message.strip().splitlines()[0] if message.strip() else "invalid SQL"
