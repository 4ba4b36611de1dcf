"""``/v1/keys``: create, list and revoke API keys (admin only, unless the gateway is open).

The plaintext key is returned once, by create; the store keeps its SHA-256 hash. Creating the
first key closes an open gateway: from then on every request needs a key.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field

from services.gateway.audit import AuditAction
from services.gateway.deps import AccessDep, AuditDep, StoreDep, require_admin
from services.gateway.errors import HttpApiError
from services.gateway.schemas.native import KnowledgeBaseNameField
from services.gateway.schemas.refs import KBS_REF
from services.gateway.store.keys import ApiKeyRecord

router = APIRouter(prefix="/v1/keys", tags=["keys"], dependencies=[Depends(require_admin)])


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
    admin: bool = Field(default=False, description="may manage keys")


class ApiKey(BaseModel):
    id: str
    name: str
    prefix: str = Field(description="first characters of the key, to tell keys apart")
    knowledge_bases: list[str] | None
    rate_limit_per_minute: int | None
    admin: bool
    created_at: float = Field(description="unix seconds")

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
        )


class CreatedKey(ApiKey):
    key: str = Field(description="the key itself: shown only in this response, store it now")


class KeyList(BaseModel):
    data: list[ApiKey]


@router.post("", status_code=status.HTTP_201_CREATED, response_model=CreatedKey)
async def create_key(
    body: CreateKey, store: StoreDep, access: AccessDep, request: Request, audit: AuditDep
) -> CreatedKey:
    knowledge_bases = None if body.knowledge_bases is None else list(dict.fromkeys(body.knowledge_bases))
    record, plaintext = await store.run(
        store.keys.create, body.name, knowledge_bases, body.rate_limit_per_minute, body.admin
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
        },
    )
    return CreatedKey(**ApiKey.of(record).model_dump(), key=plaintext)


@router.get("", response_model=KeyList)
async def list_keys(store: StoreDep) -> KeyList:
    """Active keys, newest first, without their plaintext."""
    return KeyList(data=[ApiKey.of(record) for record in await store.run(store.keys.list)])


@router.delete("/{key_id}", status_code=status.HTTP_204_NO_CONTENT, response_class=Response)
async def revoke_key(
    key_id: Annotated[str, Path(max_length=64)],
    store: StoreDep,
    access: AccessDep,
    request: Request,
    audit: AuditDep,
) -> Response:
    """Revoke a key: it stops working at once on this replica, within seconds on others."""
    if not await store.run(store.keys.revoke, key_id):
        raise HttpApiError(404, f"API key {key_id!r} not found (or already revoked)", param="key_id")
    access.forget_cached()
    await audit.record(AuditAction.KEY_REVOKE, request=request, target=key_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
