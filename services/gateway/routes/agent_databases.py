"""``/v1/agent/databases``: the SQL databases the agent's ``text2sql`` tool may query, registered
by an admin (the route table says so; any caller while the gateway is open) and kept in the gateway's store.

Databases of ``ZHIKU_GATEWAY_AGENT_SQL_DATABASES`` are listed too but belong to the
deployment: they cannot be replaced or removed here. A database is checked when registered:
its URL must be PostgreSQL or SQLite and a read-only query must succeed. URLs are listed with
their password hidden.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.engine import make_url

from services.gateway.agent.tools import ToolError, ToolRegistry
from services.gateway.agent.tools.sql_databases import RegisteredDatabase
from services.gateway.audit import AuditAction
from services.gateway.deps import AuditDep, SettingsDep, StoreDep
from services.gateway.errors import HttpApiError

router = APIRouter(prefix="/v1/agent/databases", tags=["agent"])

DatabaseName = Annotated[
    str,
    Path(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$",
        description="Name the model uses for the database (letters, digits, _ and -; at most 64)",
    ),
]


async def get_agent_tools(request: Request) -> ToolRegistry:
    tools: ToolRegistry = request.app.state.agent_tools
    return tools


AgentToolsDep = Annotated[ToolRegistry, Depends(get_agent_tools)]


class RegisterDatabase(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(
        min_length=1,
        max_length=2000,
        description="SQLAlchemy URL of a PostgreSQL or SQLite database; use an account that can only read",
        examples=["postgresql+psycopg://reader:secret@db:5432/sales"],
    )


class AgentDatabase(BaseModel):
    name: str
    backend: Literal["postgresql", "sqlite"]
    url: str = Field(description="the URL with its password hidden")
    source: Literal["settings", "api"] = Field(description="where it was registered")


class AgentDatabaseList(BaseModel):
    data: list[AgentDatabase]


def _shown(name: str, database: RegisteredDatabase, source: Literal["settings", "api"]) -> AgentDatabase:
    return AgentDatabase(
        name=name,
        backend=database.backend,  # type: ignore[arg-type]
        url=make_url(database.url).render_as_string(hide_password=True),
        source=source,
    )


@router.get("", response_model=AgentDatabaseList)
async def list_databases(tools: AgentToolsDep) -> AgentDatabaseList:
    directory = tools.sql_databases
    databases = await directory.current()
    return AgentDatabaseList(
        data=[
            _shown(name, database, "settings" if name in directory.configured else "api")
            for name, database in sorted(databases.items())
        ]
    )


@router.put("/{name}", response_model=AgentDatabase)
async def register_database(
    name: DatabaseName,
    body: RegisterDatabase,
    tools: AgentToolsDep,
    store: StoreDep,
    settings: SettingsDep,
    response: Response,
    request: Request,
    audit: AuditDep,
) -> AgentDatabase:
    """Register ``name`` (201) or point it at a new URL (200), after a read-only test query."""
    directory = tools.sql_databases
    if name in directory.configured:
        raise HttpApiError(409, f"database {name!r} is set by the deployment's settings", param="name")
    try:
        candidate = directory.open(name, body.url)
    except ValueError as error:
        raise HttpApiError(422, str(error), param="url") from None
    try:
        await asyncio.wait_for(candidate.query("SELECT 1"), timeout=settings.agent_sql_timeout_s + 5)
    except (ToolError, TimeoutError) as error:
        reason = str(error) or "no answer in time"
        raise HttpApiError(422, f"cannot query database {name!r}: {reason}", param="url") from None
    finally:
        await asyncio.to_thread(candidate.dispose)
    _, created = await store.run(store.agent_databases.put, name, body.url)
    directory.forget()
    response.status_code = status.HTTP_201_CREATED if created else status.HTTP_200_OK
    shown = _shown(name, candidate, "api")
    await audit.record(
        AuditAction.AGENT_DATABASE_REGISTER,
        request=request,
        target=name,
        detail={"url": shown.url, "backend": shown.backend, "replaced": not created},  # password hidden
    )
    return shown


@router.delete("/{name}", status_code=status.HTTP_204_NO_CONTENT, response_class=Response)
async def remove_database(
    name: DatabaseName, tools: AgentToolsDep, store: StoreDep, request: Request, audit: AuditDep
) -> Response:
    directory = tools.sql_databases
    if name in directory.configured:
        raise HttpApiError(409, f"database {name!r} is set by the deployment's settings", param="name")
    if not await store.run(store.agent_databases.delete, name):
        raise HttpApiError(404, f"database {name!r} is not registered", param="name")
    directory.forget()
    await audit.record(AuditAction.AGENT_DATABASE_REMOVE, request=request, target=name)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
