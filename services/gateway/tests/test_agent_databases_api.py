"""``/v1/agent/databases``: an admin registers text2sql databases (real SQLite and PostgreSQL),
checked on registration, listed without passwords, used by the tool at once, removed; other
keys are refused, and the deployment's own databases cannot be replaced."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from services.gateway.agent.tools import ToolContext, ToolError
from services.gateway.app import create_app

from .support import asgi_client, gateway_settings

ADMIN = {"Authorization": "Bearer root-key"}
PG_URL = "postgresql+psycopg://postgres:hunter2@127.0.0.1:5432/test"


def shop(path: Path) -> Path:
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE stock (item TEXT, count INTEGER)")
        connection.executemany("INSERT INTO stock VALUES (?, ?)", [("rope", 12), ("buoy", 3)])
    return path


async def test_admin_registers_lists_uses_and_removes_databases(tmp_path: Path) -> None:
    fixed = shop(tmp_path / "fixed.db")
    settings = gateway_settings(
        {}, api_keys="root-key", agent_tools="text2sql", agent_sql_databases={"fixed": f"sqlite:///{fixed}"}
    )
    app = create_app(settings)
    async with asgi_client(app) as client:
        registry = app.state.agent_tools
        context = ToolContext(settings=settings)
        url = f"sqlite:///{shop(tmp_path / 'shop.db')}"

        created = await client.put("/v1/agent/databases/shop", json={"url": url}, headers=ADMIN)
        assert created.status_code == 201, created.text
        assert created.json() == {"name": "shop", "backend": "sqlite", "url": url, "source": "api"}
        again = await client.put("/v1/agent/databases/shop", json={"url": url}, headers=ADMIN)
        assert again.status_code == 200

        postgres = await client.put("/v1/agent/databases/pg", json={"url": PG_URL}, headers=ADMIN)
        assert postgres.status_code == 201, postgres.text
        assert "hunter2" not in postgres.text and postgres.json()["url"].startswith(
            "postgresql+psycopg://postgres:***@"
        )

        listed = (await client.get("/v1/agent/databases", headers=ADMIN)).json()["data"]
        assert [(d["name"], d["backend"], d["source"]) for d in listed] == [
            ("fixed", "sqlite", "settings"),
            ("pg", "postgresql", "api"),
            ("shop", "sqlite", "api"),
        ]
        assert "hunter2" not in str(listed)

        result = await registry.run(
            "text2sql", {"database": "shop", "sql": "SELECT item FROM stock ORDER BY item"}, context
        )
        assert result.data["rows"] == [["buoy"], ["rope"]]
        pg = await registry.run("text2sql", {"database": "pg", "sql": "SELECT 40 + 2 AS answer"}, context)
        assert pg.data["rows"] == [[42]]
        assert sorted(registry.get("text2sql").parameters["properties"]["database"]["enum"]) == [
            "fixed",
            "pg",
            "shop",
        ]

        assert (await client.delete("/v1/agent/databases/shop", headers=ADMIN)).status_code == 204
        with pytest.raises(ToolError, match="unknown database 'shop'; registered databases: fixed, pg"):
            await registry.run("text2sql", {"database": "shop", "sql": "SELECT 1"}, context)
        missing = await client.delete("/v1/agent/databases/shop", headers=ADMIN)
        assert missing.status_code == 404 and "is not registered" in missing.json()["error"]["message"]
        assert (await client.delete("/v1/agent/databases/pg", headers=ADMIN)).status_code == 204


async def test_bad_registrations_get_precise_errors(tmp_path: Path) -> None:
    settings = gateway_settings(
        {}, api_keys="root-key", agent_sql_databases={"fixed": f"sqlite:///{shop(tmp_path / 'f.db')}"}
    )
    async with asgi_client(create_app(settings)) as client:
        cases = [
            (
                "x",
                {"url": "mysql://reader@db/sales"},
                422,
                "supports postgresql and sqlite databases, not 'mysql'",
            ),
            ("x", {"url": "not a url"}, 422, "not a SQLAlchemy URL"),
            ("x", {"url": f"sqlite:///{tmp_path / 'absent.db'}"}, 422, "cannot query database 'x'"),
            (
                "x",
                {"url": "postgresql+psycopg://postgres@127.0.0.1:5432/no_such_db_here"},
                422,
                "cannot query",
            ),
            ("fixed", {"url": f"sqlite:///{tmp_path / 'f.db'}"}, 409, "set by the deployment's settings"),
            ("bad name!", {"url": "sqlite:///x.db"}, 422, "name"),
            ("x", {"url": "sqlite:///x.db", "extra": 1}, 422, "extra"),
        ]
        for name, body, code, message in cases:
            answer = await client.put(f"/v1/agent/databases/{name}", json=body, headers=ADMIN)
            assert answer.status_code == code, (name, body, answer.text)
            assert message in answer.json()["error"]["message"], answer.text
        assert (await client.delete("/v1/agent/databases/fixed", headers=ADMIN)).status_code == 409
        assert (await client.get("/healthz")).status_code == 200  # still up


async def test_only_admin_keys_manage_databases(tmp_path: Path) -> None:
    async with asgi_client(create_app(gateway_settings({}, api_keys="root-key"))) as client:
        made = await client.post("/v1/keys", json={"name": "bot"}, headers=ADMIN)
        bot = {"Authorization": f"Bearer {made.json()['key']}"}
        url = f"sqlite:///{shop(tmp_path / 'shop.db')}"
        assert (await client.put("/v1/agent/databases/shop", json={"url": url})).status_code == 401
        refused = await client.put("/v1/agent/databases/shop", json={"url": url}, headers=bot)
        assert refused.status_code == 403
        assert (await client.get("/v1/agent/databases", headers=bot)).status_code == 403
        assert (await client.delete("/v1/agent/databases/shop", headers=bot)).status_code == 403
        assert (await client.get("/v1/agent/databases", headers=ADMIN)).json() == {"data": []}
