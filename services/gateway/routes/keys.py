"""``/v1/keys``: create, list and revoke API keys.

A person (signed in, or through a key of theirs) manages their own keys, which belong to them
and never exceed their rights: only an admin may make an admin key, and a key made through a
key limited to some knowledge bases is limited to (some of) those. Admins see and revoke every
key; keys made by environment keys or admin keys that belong to nobody belong to nobody too.
The plaintext key is returned once, by create; the store keeps its SHA-256 hash. Creating the
first key closes an open gateway. Who may call these routes is the route table's rule.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field

from services.gateway.access import Principal
from services.gateway.audit import AuditAction
from services.gateway.deps import AccessDep, AuditDep, CurrentKey, StoreDep
from services.gateway.errors import HttpApiError
from services.gateway.schemas.native import KnowledgeBaseNameField
from services.gateway.schemas.refs import KBS_REF
from services.gateway.store.keys import ApiKeyRecord

router = APIRouter(prefix="/v1/keys", tags=["keys"])


class CreateKey(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str = Field(min_length=1, max_length=200, examples=["support-bot"])
    knowledge_bases: list[KnowledgeBaseNameField] | None = Field(
        default=None,
        max_length=1000,
        description="allowed knowledge bases; null = all",
        examples=[["handbook"]],
        json_schema_extra=KBS_REF,
    )
    rate_limit_per_minute: int | None = Field(
        default=None, ge=1, le=1_000_000, description="null = the gateway's default limit", examples=[60]
    )
    admin: bool = Field(default=False, description="the global admin's rights (only admins may ask)")


class ApiKey(BaseModel):
    id: str
    name: str
    prefix: str = Field(description="first characters of the key, to tell keys apart")
    knowledge_bases: list[str] | None
    rate_limit_per_minute: int | None
    admin: bool
    created_at: float = Field(description="unix seconds")
    owner: str | None = Field(default=None, description="the user the key belongs to; null: nobody")

    @classmethod
    def of(cls, record: ApiKeyRecord) -> ApiKey:
        return cls(
            id=record.id,
            name=record.name,
            prefix=record.prefix,
            knowledge_bases=record.knowledge_bases,
            rate_limit_per_minute=record.rate_limit_per_minute,
            admin=record.admin,
            created_at=record.created_at,
            owner=record.owner,
        )


class CreatedKey(ApiKey):
    key: str = Field(description="the key itself: shown only in this response, store it now")


class KeyList(BaseModel):
    data: list[ApiKey]


def _scope(body: CreateKey, principal: Principal | None) -> list[str] | None:
    """The new key's knowledge bases: as asked, within the calling key's own list."""
    asked = None if body.knowledge_bases is None else list(dict.fromkeys(body.knowledge_bases))
    if principal is None or principal.knowledge_bases is None:
        return asked
    if asked is None:
        return sorted(principal.knowledge_bases)
    outside = [name for name in asked if name not in principal.knowledge_bases]
    if outside:
        raise HttpApiError(
            403,
            f"this key may not use {', '.join(map(repr, outside))}, so a key it makes may not either",
            param="knowledge_bases",
        )
    return asked


def _managed_by(principal: Principal | None) -> str | None:
    """Whose keys the caller lists and revokes: None (all) for admins and an open gateway."""
    return None if principal is None or principal.admin else (principal.user_id or "")


@router.post("", status_code=status.HTTP_201_CREATED, response_model=CreatedKey)
async def create_key(
    body: CreateKey,
    store: StoreDep,
    access: AccessDep,
    principal: CurrentKey,
    request: Request,
    audit: AuditDep,
) -> CreatedKey:
    """A new key, belonging to the signed-in user (or the user whose key makes it)."""
    if body.admin and principal is not None and not principal.admin:
        raise HttpApiError(403, "only an admin may create an admin key", code="admin_required", param="admin")
    owner = None if principal is None else principal.user_id
    record, plaintext = await store.run(
        store.keys.create, body.name, _scope(body, principal), body.rate_limit_per_minute, body.admin, owner
    )
    access.forget_cached()
    await audit.record(
        AuditAction.KEY_CREATE,
        request=request,
        target=record.id,
        detail={
            "name": record.name,
            "prefix": record.prefix,
            "admin": record.admin,
            "knowledge_bases": record.knowledge_bases,
            "rate_limit_per_minute": record.rate_limit_per_minute,
            "owner": record.owner,
        },
    )
    return CreatedKey(**ApiKey.of(record).model_dump(), key=plaintext)


@router.get("", response_model=KeyList)
async def list_keys(store: StoreDep, principal: CurrentKey) -> KeyList:
    """Active keys, newest first, without their plaintext: the caller's own, every key for admins."""
    records = await store.run(store.keys.list, _managed_by(principal))
    return KeyList(data=[ApiKey.of(record) for record in records])


@router.delete("/{key_id}", status_code=status.HTTP_204_NO_CONTENT, response_class=Response)
async def revoke_key(
    key_id: Annotated[str, Path(max_length=64)],
    store: StoreDep,
    access: AccessDep,
    principal: CurrentKey,
    request: Request,
    audit: AuditDep,
) -> Response:
    """Revoke a key: it stops working at once on this replica, within seconds on others."""
    if not await store.run(store.keys.revoke, key_id, _managed_by(principal)):
        raise HttpApiError(404, f"API key {key_id!r} not found (or already revoked)", param="key_id")
    access.forget_cached()
    await audit.record(AuditAction.KEY_REVOKE, request=request, target=key_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
