"""The gateway's own catalog tables (prefix ``gw_``): conversations, messages, feedback, API
keys, temporary file-chat knowledge bases, the agent's registered SQL databases, the audit trail,
and identity: users, groups, their memberships, knowledge-base role grants and sign-in sessions.

They live in the same database as the ingest catalog (one URL to operate) but are owned and
created by the gateway only; the ingest service never reads them.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, Double, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class GatewayTable(DeclarativeBase):
    pass


class ConversationRow(GatewayTable):
    __tablename__ = "gw_conversations"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    title: Mapped[str] = mapped_column(Text, default="")
    knowledge_base: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # The API key that created it (NULL while the gateway is open); non-admin keys see only theirs.
    owner: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    created_at: Mapped[float] = mapped_column(Double)
    updated_at: Mapped[float] = mapped_column(Double, index=True)


class MessageRow(GatewayTable):
    __tablename__ = "gw_messages"

    # An increasing integer orders a conversation's messages even when two share a timestamp.
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(32), unique=True)
    conversation_id: Mapped[str] = mapped_column(
        ForeignKey("gw_conversations.id", ondelete="CASCADE"), index=True
    )
    role: Mapped[str] = mapped_column(String(16))
    content: Mapped[str] = mapped_column(Text)
    # JSON list of the citations the answer was generated from (empty for user turns).
    citations: Mapped[str] = mapped_column(Text, default="[]")
    # JSON object of what a knowledge-base answer says about itself (abstained, retrieval_query,
    # unsupported sentences), so a reopened conversation shows it as it was shown live; NULL for
    # user turns, other answers, and rows older than the column.
    grounding: Mapped[str | None] = mapped_column(Text, nullable=True)
    # JSON object of a tool turn's OpenAI fields: {"tool_calls": [...]} on an assistant turn that
    # called tools, {"tool_call_id", "name"} on a tool result; NULL for every other message.
    tool_turn: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[float] = mapped_column(Double)


class FeedbackRow(GatewayTable):
    __tablename__ = "gw_feedback"

    message_id: Mapped[str] = mapped_column(
        ForeignKey("gw_messages.id", ondelete="CASCADE"), primary_key=True
    )
    score: Mapped[int] = mapped_column(Integer)
    reason: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[float] = mapped_column(Double)


class ApiKeyRow(GatewayTable):
    __tablename__ = "gw_api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    prefix: Mapped[str] = mapped_column(String(16))
    # SHA-256 of the key: keys are 256 random bits, so a fast hash cannot be brute-forced.
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # JSON list of allowed knowledge bases; NULL = all of them.
    knowledge_bases: Mapped[str | None] = mapped_column(Text, nullable=True)
    rate_limit_per_minute: Mapped[int | None] = mapped_column(Integer, nullable=True)
    admin: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[float] = mapped_column(Double)
    # The user the key belongs to (its rights never exceed theirs); NULL for keys made before
    # users existed and by environment keys, which keep their own scope alone.
    owner: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    revoked_at: Mapped[float | None] = mapped_column(Double, nullable=True, index=True)


class FileChatRow(GatewayTable):
    __tablename__ = "gw_file_chats"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    knowledge_base: Mapped[str] = mapped_column(String(64), unique=True)
    # The API key that made it (NULL while the gateway is open): only it may use the file chat.
    owner: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[float] = mapped_column(Double)
    # Stored, not kept in memory, so a restarted gateway still sweeps what expired meanwhile.
    expires_at: Mapped[float] = mapped_column(Double, index=True)


class AgentDatabaseRow(GatewayTable):
    """A database an admin registered for the agent's text2sql tool (through the API)."""

    __tablename__ = "gw_agent_databases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    # A SQLAlchemy URL; it may hold the (read-only) account's password, never shown by the API.
    url: Mapped[str] = mapped_column(Text)
    created_at: Mapped[float] = mapped_column(Double)


class UserRow(GatewayTable):
    """A person: signs in with a password (argon2 hash) or through SSO (no password)."""

    __tablename__ = "gw_users"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # u_<hex>
    email: Mapped[str] = mapped_column(String(320), unique=True)  # lower-cased
    display_name: Mapped[str] = mapped_column(String(200), default="")
    password_hash: Mapped[str | None] = mapped_column(Text, nullable=True)
    # The identity provider's subject (issuer + sub) of a user made or linked by SSO.
    sso_subject: Mapped[str | None] = mapped_column(String(512), nullable=True, unique=True)
    admin: Mapped[bool] = mapped_column(Boolean, default=False)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[float] = mapped_column(Double)


class GroupRow(GatewayTable):
    """A team: holds knowledge-base roles for all its members at once."""

    __tablename__ = "gw_groups"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)  # a slug
    display_name: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[float] = mapped_column(Double)


class GroupMemberRow(GatewayTable):
    __tablename__ = "gw_group_members"

    group_name: Mapped[str] = mapped_column(
        ForeignKey("gw_groups.name", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[str] = mapped_column(
        ForeignKey("gw_users.id", ondelete="CASCADE"), primary_key=True, index=True
    )


class RoleGrantRow(GatewayTable):
    """``holder`` (a user id or a group name, by ``holder_kind``) has ``role`` on a knowledge base.

    Not a foreign key to users or groups: the holder is one of two tables; deleting a user or
    a group deletes its grants explicitly."""

    __tablename__ = "gw_role_grants"
    __table_args__ = (UniqueConstraint("knowledge_base", "holder_kind", "holder"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    knowledge_base: Mapped[str] = mapped_column(String(64), index=True)
    holder_kind: Mapped[str] = mapped_column(String(8))  # "user" | "group"
    holder: Mapped[str] = mapped_column(String(64), index=True)
    role: Mapped[str] = mapped_column(String(16))  # "owner" | "editor" | "viewer"
    created_at: Mapped[float] = mapped_column(Double)


class SessionRow(GatewayTable):
    """A signed-in browser: the cookie's token is stored as its SHA-256 (256 random bits)."""

    __tablename__ = "gw_sessions"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("gw_users.id", ondelete="CASCADE"), index=True)
    # Sent back in X-CSRF-Token by cookie-authenticated writes; not a credential on its own.
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[float] = mapped_column(Double)
    expires_at: Mapped[float] = mapped_column(Double, index=True)
    created_ip: Mapped[str] = mapped_column(String(64), default="")
    user_agent: Mapped[str] = mapped_column(String(300), default="")


class AuditRow(GatewayTable):
    """One audited action (``services.gateway.audit``): who, what, when, from where, outcome."""

    __tablename__ = "gw_audit"
    # SQLite's AUTOINCREMENT: a seq is never reused, even after pruning emptied the table.
    __table_args__ = ({"sqlite_autoincrement": True},)

    # Increasing: newest first is ``seq`` descending, and a page's last ``seq`` is its cursor.
    # BIGINT on PostgreSQL, INTEGER (the rowid alias SQLite autoincrements) on SQLite.
    seq: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    at: Mapped[float] = mapped_column(Double, index=True)
    action: Mapped[str] = mapped_column(String(48), index=True)
    outcome: Mapped[str] = mapped_column(String(16))
    # "user", "key", "anonymous" (an open gateway) or "gateway" (its own background work).
    actor_type: Mapped[str] = mapped_column(String(16))
    # A user id, a key id, "anonymous" or "gateway"; ``actor_name`` an email or a key's name.
    actor_id: Mapped[str] = mapped_column(String(128), index=True)
    actor_name: Mapped[str] = mapped_column(String(320))
    # The API key the request came with (also for users calling with a key of theirs).
    key_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    knowledge_base: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    target: Mapped[str | None] = mapped_column(Text, nullable=True)
    client_ip: Mapped[str | None] = mapped_column(String(64), nullable=True)
    user_agent: Mapped[str | None] = mapped_column(Text, nullable=True)
    request_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    # JSON object of the action's particulars (never secrets: no keys, passwords or URLs' passwords).
    detail: Mapped[str] = mapped_column(Text, default="{}")


# Columns added after a table's first release: ``create_schema`` adds them to older databases.
ADDED_COLUMNS: dict[str, dict[str, str]] = {
    "gw_file_chats": {"owner": "VARCHAR(64)"},
    "gw_messages": {"grounding": "TEXT", "tool_turn": "TEXT"},
    "gw_api_keys": {"owner": "VARCHAR(64)"},
}
