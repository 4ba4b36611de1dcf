"""``/v1/knowledge_bases/{kb}/members``: who holds which role on a knowledge base (sharing).

Owners and admins only (the route table's rule). A user may be named by id or by email, so
an owner can share without seeing the user list; a group by its name. Granting again changes
the role. A knowledge base keeps at least one owner here (admins may still delete it).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request, Response, status

from services.gateway.audit import AuditAction
from services.gateway.deps import AuditDep, GuardDep, IngestStub, KnowledgeBaseName, SettingsDep, StoreDep
from services.gateway.errors import HttpApiError
from services.gateway.schemas.identity import Member, MemberKind, MemberList, SetMember
from services.gateway.store import GatewayStore
from services.gateway.store.grants import Grant, HolderKind, Role
from zhiku.v1 import ingest_pb2

router = APIRouter(prefix="/v1/knowledge_bases/{kb}/members", tags=["knowledge bases"])


async def _members(store: GatewayStore, kb: str) -> list[Member]:
    grants = await store.run(store.grants.of_knowledge_base, kb)
    users = {user.id: user for user in await store.run(store.users.list)}
    group_names = {group.name: group.display_name for group in await store.run(store.groups.list)}
    members = []
    for grant in grants:
        if grant.kind is HolderKind.USER:
            user = users.get(grant.holder)
            name = grant.holder if user is None else user.email
        else:
            name = group_names.get(grant.holder, grant.holder)
        members.append(Member.of(grant, name))
    return members


async def _holder(store: GatewayStore, kind: MemberKind, given: str) -> str:
    """The user id or group name ``given`` names; 404 when there is none."""
    if kind == "group":
        if await store.run(store.groups.get, given) is None:
            raise HttpApiError(404, f"group {given!r} does not exist", param="id")
        return given
    user = (
        await store.run(store.users.find_by_email, given)
        if "@" in given
        else await store.run(store.users.get, given)
    )
    if user is None:
        raise HttpApiError(404, f"user {given!r} does not exist", param="id")
    return user.id


def _keeps_an_owner(grants: list[Grant], changed: tuple[HolderKind, str], role: Role | None) -> bool:
    """Whether the grants still include an owner after ``changed`` gets ``role`` (None: removed);
    True when they had none (a knowledge base made before users, shared by an admin)."""
    if not any(grant.role is Role.OWNER for grant in grants):
        return True
    for grant in grants:
        current = role if (grant.kind, grant.holder) == changed else grant.role
        if current is Role.OWNER:
            return True
    return role is Role.OWNER


async def _exists(kb: str, ingest: IngestStub, settings: SettingsDep) -> None:
    """404 (the ingest service's) when the knowledge base does not exist."""
    await ingest.GetKnowledgeBase(
        ingest_pb2.GetKnowledgeBaseRequest(name=kb), timeout=settings.request_timeout_s
    )


@router.get("", response_model=MemberList)
async def list_members(
    kb: KnowledgeBaseName, store: StoreDep, ingest: IngestStub, settings: SettingsDep
) -> MemberList:
    await _exists(kb, ingest, settings)
    return MemberList(members=await _members(store, kb))


@router.put("", response_model=Member)
async def set_member(
    kb: KnowledgeBaseName,
    body: SetMember,
    store: StoreDep,
    guard: GuardDep,
    ingest: IngestStub,
    settings: SettingsDep,
    request: Request,
    audit: AuditDep,
) -> Member:
    """Give a user or a group a role on the knowledge base (replacing the one it had)."""
    await _exists(kb, ingest, settings)
    kind, role = HolderKind(body.kind), Role.of(body.role)
    holder = await _holder(store, body.kind, body.id)
    grants = await store.run(store.grants.of_knowledge_base, kb)
    if not _keeps_an_owner(grants, (kind, holder), role):
        raise HttpApiError(409, f"knowledge base {kb!r} must keep an owner: make someone else owner first")
    grant = await store.run(store.grants.set, kb, kind, holder, role)
    guard.forget_roles()
    await audit.record(
        AuditAction.KB_MEMBER_SET,
        request=request,
        knowledge_base=kb,
        target=f"{kind.value}:{holder}",
        detail={"role": role.label},
    )
    return next(
        member
        for member in await _members(store, kb)
        if (member.kind, member.id) == (grant.kind.value, holder)
    )


@router.delete("/{kind}/{holder}", status_code=status.HTTP_204_NO_CONTENT, response_class=Response)
async def remove_member(
    kb: KnowledgeBaseName,
    kind: MemberKind,
    holder: Annotated[str, Path(max_length=320, description="a user id or a group name")],
    store: StoreDep,
    guard: GuardDep,
    ingest: IngestStub,
    settings: SettingsDep,
    request: Request,
    audit: AuditDep,
) -> Response:
    """Take a user's or a group's role away (their other roles, through groups, remain)."""
    await _exists(kb, ingest, settings)
    grants = await store.run(store.grants.of_knowledge_base, kb)
    held = HolderKind(kind), holder
    if not any((grant.kind, grant.holder) == held for grant in grants):
        raise HttpApiError(404, f"{kind} {holder!r} holds no role on knowledge base {kb!r}", param="holder")
    if not _keeps_an_owner(grants, held, None):
        raise HttpApiError(409, f"knowledge base {kb!r} must keep an owner: make someone else owner first")
    await store.run(store.grants.remove, kb, held[0], holder)
    guard.forget_roles()
    await audit.record(
        AuditAction.KB_MEMBER_REMOVE, request=request, knowledge_base=kb, target=f"{kind}:{holder}"
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)
