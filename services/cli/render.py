"""Rich tables and lines for the API's documents; no I/O besides building renderables.

Values coming from the gateway (names, passages, errors) are wrapped in :class:`Text`, never
interpolated into markup, so a file called ``[red].txt`` prints as itself.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any

from rich.table import Table
from rich.text import Text

from services.cli.client import ApiKey, Group, Job, KnowledgeBase, Member, SearchHit, User

STATE_STYLES = {
    "succeeded": "green",
    "failed": "red",
    "cancelled": "yellow",
    "running": "cyan",
    "queued": "dim",
    "unchanged": "green",
}


def when(value: object) -> str:
    """Unix seconds or an ISO string, shown as local ``YYYY-MM-DD HH:MM:SS``."""
    if value in (None, "", 0):
        return ""
    if isinstance(value, int | float):
        return dt.datetime.fromtimestamp(value).strftime("%Y-%m-%d %H:%M:%S")
    try:
        return dt.datetime.fromisoformat(str(value)).astimezone().strftime("%Y-%m-%d %H:%M:%S")
    except ValueError:
        return str(value)


def size(n: object) -> str:
    if not isinstance(n, int | float):
        return ""
    value = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GB"


def state_text(state: str) -> Text:
    return Text(state, style=STATE_STYLES.get(state, ""))


def one_line(text: str, limit: int) -> str:
    """Passages on one table row: whitespace collapsed, cut at ``limit`` characters."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def file_name_of(entry: Mapping[str, Any]) -> str:
    """The file list says ``file_name`` (older gateways: ``name``)."""
    return str(entry.get("file_name") or entry.get("name") or "")


def knowledge_bases_table(kbs: Iterable[KnowledgeBase]) -> Table:
    table = Table(title="Knowledge bases")
    for column in ("name", "description", "files", "chunks", "embedding model", "created"):
        table.add_column(column, justify="right" if column in ("files", "chunks") else "left")
    for kb in kbs:
        table.add_row(
            Text(kb.get("name", "")),
            Text(kb.get("description", "")),
            str(kb.get("file_count", "")),
            str(kb.get("chunk_count", "")),
            Text(kb.get("embed_model", "")),
            when(kb.get("created_at")),
        )
    return table


def files_table(kb: str, files: Iterable[Mapping[str, Any]]) -> Table:
    table = Table(title=f"Files in {kb}")
    for column in ("file", "size", "chunks", "state", "error", "uploaded"):
        table.add_column(column, justify="right" if column in ("size", "chunks") else "left")
    for entry in files:
        table.add_row(
            Text(file_name_of(entry)),
            size(entry.get("size")),
            str(entry.get("chunks", "")),
            state_text(str(entry.get("state", ""))),
            Text(str(entry.get("error") or ""), style="red"),
            when(entry.get("uploaded_at") or entry.get("created_at")),
        )
    return table


def jobs_table(title: str, jobs: Iterable[Job]) -> Table:
    table = Table(title=title)
    for column in ("id", "file", "state", "stage", "progress", "chunks", "error"):
        table.add_column(column, justify="right" if column in ("progress", "chunks") else "left")
    for job in jobs:
        table.add_row(
            Text(job.get("id", "")),
            Text(job.get("file_name", "")),
            state_text(job.get("state", "")),
            Text(job.get("stage", "")),
            f"{100 * float(job.get('progress') or 0):.0f}%",
            str(job.get("chunks", "")),
            Text(job.get("error") or "", style="red"),
        )
    return table


def hits_table(kb: str, query: str, hits: Iterable[SearchHit], text_limit: int = 160) -> Table:
    table = Table(title=Text(f"{kb}: {query}"))
    table.add_column("#", justify="right")
    table.add_column("score", justify="right")
    table.add_column("file")
    table.add_column("passage")
    for rank, hit in enumerate(hits, start=1):
        table.add_row(
            str(rank),
            f"{float(hit.get('score', 0.0)):.3f}",
            Text(hit.get("file_name", "")),
            Text(one_line(hit.get("text", ""), text_limit)),
        )
    return table


def keys_table(keys: Iterable[ApiKey]) -> Table:
    table = Table(title="API keys")
    for column in ("id", "name", "prefix", "knowledge bases", "rate limit/min", "admin", "created"):
        table.add_column(column)
    for key in keys:
        kbs = key.get("knowledge_bases")
        limit = key.get("rate_limit_per_minute")
        table.add_row(
            Text(str(key.get("id", ""))),
            Text(key.get("name", "")),
            Text(key.get("prefix", "")),
            Text("all" if kbs is None else ", ".join(kbs)),
            "none" if limit is None else str(limit),
            "yes" if key.get("admin") else "no",
            when(key.get("created_at")),
        )
    return table


def users_table(users: Iterable[User]) -> Table:
    table = Table(title="Users")
    for column in ("id", "email", "name", "admin", "groups", "state", "created"):
        table.add_column(column)
    for user in users:
        state = "disabled" if user.get("disabled") else ("sso" if user.get("sso") else "active")
        table.add_row(
            Text(str(user.get("id", ""))),
            Text(str(user.get("email", ""))),
            Text(str(user.get("display_name", ""))),
            "yes" if user.get("admin") else "no",
            Text(", ".join(user.get("groups") or [])),
            Text(state, style="red" if user.get("disabled") else ""),
            when(user.get("created_at")),
        )
    return table


def member_ids(group: Group, users: Iterable[User]) -> list[str]:
    """A group's members: its own list when the gateway gives one, else from each user's groups."""
    members = group.get("members")
    if isinstance(members, list):
        return [str(m.get("id") if isinstance(m, Mapping) else m) for m in members]
    return [str(u.get("id")) for u in users if group.get("name") in (u.get("groups") or [])]


def groups_table(groups: Iterable[Group], users: list[User]) -> Table:
    emails = {str(u.get("id")): str(u.get("email", "")) for u in users}
    table = Table(title="Groups")
    for column in ("name", "display name", "members"):
        table.add_column(column)
    for group in groups:
        members = [emails.get(member, member) for member in member_ids(group, users)]
        table.add_row(
            Text(str(group.get("name", ""))),
            Text(str(group.get("display_name", ""))),
            Text(", ".join(members)),
        )
    return table


def members_table(kb: str, members: Iterable[Member]) -> Table:
    table = Table(title=f"Members of {kb}")
    for column in ("kind", "name", "id", "role"):
        table.add_column(column)
    for member in members:
        table.add_row(
            Text(str(member.get("kind", ""))),
            Text(str(member.get("name", ""))),
            Text(str(member.get("id", ""))),
            Text(str(member.get("role", "")), style="bold"),
        )
    return table


def source_lines(citations: Iterable[Mapping[str, Any]], absolute: Any, text_limit: int = 120) -> list[Text]:
    """``[n] file  score  url`` and the passage's start, one citation after another."""
    lines: list[Text] = []
    for number, citation in enumerate(citations, start=1):
        line = Text()
        line.append(f"[{number}] ", style="bold")
        line.append(str(citation.get("file_name", "")), style="cyan")
        line.append(f"  score {float(citation.get('score', 0.0)):.3f}", style="dim")
        if citation.get("url"):
            line.append(f"  {absolute(str(citation['url']))}", style="dim underline")
        lines.append(line)
        if citation.get("text"):
            lines.append(Text("    " + one_line(str(citation["text"]), text_limit), style="dim"))
    return lines
