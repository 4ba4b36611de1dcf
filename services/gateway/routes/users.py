"""``/v1/users`` and ``/v1/groups``: people and teams, managed by admins (the route table's rule).

Changes apply at once on this replica (cached keys, owners and roles are forgotten) and within
seconds on others; disabling a user also ends their sessions, so they lose access on their
next request everywhere. The last enabled admin cannot be demoted, disabled or deleted: the
gateway would have nobody left to manage it (ZHIKU_GATEWAY_ADMIN_EMAIL restores one at start).
"""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Path, Request, Response, status

from services.common.errors import AlreadyExists
from services.gateway.audit import AuditAction
from services.gateway.deps import AccessDep, AuditDep, CurrentKey, GuardDep, StoreDep
from services.gateway.errors import HttpApiError
from services.gateway.passwords import hash_password, password_problem
from services.gateway.schemas.identity import (
    GROUP_PATTERN,
    CreateGroup,
    CreateUser,
    Group,
    GroupList,
    UpdateUser,
    User,
    UserList,
)
from services.gateway.store.users import UserRecord

users = APIRouter(prefix="/v1/users", tags=["users"])
groups = APIRouter(prefix="/v1/groups", tags=["users"])
routers = [users, groups]

UserId = Annotated[str, Path(max_length=64, description="a user id (u_...)")]
GroupPath = Annotated[str, Path(pattern=GROUP_PATTERN, description="a group name")]


async def _hashed(password: str | None) -> str | None:
    if password is None:
        return None
    problem = password_problem(password)
    if problem is not None:
        raise HttpApiError(422, problem, param="password")
    return await asyncio.to_thread(hash_password, password)


async def _found(store: StoreDep, user_id: str) -> UserRecord:
    user = await store.run(store.users.get, user_id)
    if user is None:
        raise HttpApiError(404, f"user {user_id!r} does not exist", param="user_id")
    return user


async def _keep_an_admin(store: StoreDep, user: UserRecord, what: str) -> None:
    if user.admin and not user.disabled and await store.run(store.users.count_active_admins) <= 1:
        raise HttpApiError(409, f"{user.email} is the last admin: make another admin before you {what}")


@users.get("", response_model=UserList)
async def list_users(store: StoreDep) -> UserList:
    return UserList(data=[User.of(user) for user in await store.run(store.users.list)])


@users.post("", status_code=status.HTTP_201_CREATED, response_model=User)
async def create_user(
    body: CreateUser, store: StoreDep, access: AccessDep, request: Request, audit: AuditDep
) -> User:
    """A new user; without a password they sign in through SSO only. 409 when the email is taken."""
    password_hash = await _hashed(body.password)
    try:
        user = await store.run(store.users.create, body.email, body.display_name, password_hash, body.admin)
    except AlreadyExists as error:
        raise HttpApiError(409, str(error), param="email") from error
    access.forget_cached()  # the first user closes an open gateway
    await audit.record(
        AuditAction.USER_CREATE,
        request=request,
        target=user.id,
        detail={"email": user.email, "admin": user.admin},
    )
    return User.of(user)


@users.get("/{user_id}", response_model=User)
async def get_user(user_id: UserId, store: StoreDep) -> User:
    return User.of(await _found(store, user_id))


@users.patch("/{user_id}", response_model=User)
async def update_user(
    user_id: UserId,
    body: UpdateUser,
    store: StoreDep,
    access: AccessDep,
    guard: GuardDep,
    request: Request,
    audit: AuditDep,
) -> User:
    """Change a user's name, password, admin flag or disabled flag (absent fields stay)."""
    user = await _found(store, user_id)
    if body.admin is False or body.disabled is True:
        await _keep_an_admin(store, user, "demote or disable them")
    password_hash = await _hashed(body.password)
    updated = await store.run(
        store.users.update,
        user_id,
        display_name=body.display_name,
        admin=body.admin,
        disabled=body.disabled,
        password_hash=password_hash,
    )
    if updated is None:
        raise HttpApiError(404, f"user {user_id!r} does not exist", param="user_id")
    access.forget_cached()
    guard.forget_roles()
    changed = sorted(
        name for name, value in body.model_dump(exclude={"password"}).items() if value is not None
    )
    await audit.record(
        AuditAction.USER_UPDATE,
        request=request,
        target=user_id,
        detail={
            "changed": changed,
            "password_changed": body.password is not None,
            "admin": updated.admin,
            "disabled": updated.disabled,
        },
    )
    return User.of(updated)


@users.delete("/{user_id}", status_code=status.HTTP_204_NO_CONTENT, response_class=Response)
async def delete_user(
    user_id: UserId,
    store: StoreDep,
    access: AccessDep,
    guard: GuardDep,
    request: Request,
    audit: AuditDep,
) -> Response:
    """Delete a user with their sessions, memberships and roles; their API keys are revoked.
    Their conversations stay (an admin key still sees them)."""
    user = await _found(store, user_id)
    await _keep_an_admin(store, user, "delete them")
    await store.run(store.keys.revoke_owned_by, user_id)
    if not await store.run(store.users.delete, user_id):
        raise HttpApiError(404, f"user {user_id!r} does not exist", param="user_id")
    access.forget_cached()
    guard.forget_roles()
    await audit.record(AuditAction.USER_DELETE, request=request, target=user_id, detail={"email": user.email})
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@groups.get("", response_model=GroupList)
async def list_groups(store: StoreDep, principal: CurrentKey) -> GroupList:
    """Every group (to share knowledge bases with); members are shown to admins only."""
    admin = principal is None or principal.admin
    return GroupList(data=[Group.of(group, admin) for group in await store.run(store.groups.list)])


@groups.post("", status_code=status.HTTP_201_CREATED, response_model=Group)
async def create_group(body: CreateGroup, store: StoreDep, request: Request, audit: AuditDep) -> Group:
    try:
        group = await store.run(store.groups.create, body.name, body.display_name)
    except AlreadyExists as error:
        raise HttpApiError(409, str(error), param="name") from error
    await audit.record(AuditAction.GROUP_CREATE, request=request, target=group.name)
    return Group.of(group)


@groups.delete("/{group}", status_code=status.HTTP_204_NO_CONTENT, response_class=Response)
async def delete_group(
    group: GroupPath, store: StoreDep, access: AccessDep, guard: GuardDep, request: Request, audit: AuditDep
) -> Response:
    """Delete a group with its memberships and the roles it held."""
    if not await store.run(store.groups.delete, group):
        raise HttpApiError(404, f"group {group!r} does not exist", param="group")
    access.forget_cached()
    guard.forget_roles()
    await audit.record(AuditAction.GROUP_DELETE, request=request, target=group)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@groups.put("/{group}/members/{user_id}", response_model=Group)
async def add_group_member(
    group: GroupPath,
    user_id: UserId,
    store: StoreDep,
    access: AccessDep,
    guard: GuardDep,
    request: Request,
    audit: AuditDep,
) -> Group:
    """Put a user in a group (idempotent); the group's roles apply to them at once."""
    added = await store.run(store.groups.add_member, group, user_id)
    if added is None:
        raise HttpApiError(404, f"group {group!r} or user {user_id!r} does not exist")
    access.forget_cached()
    guard.forget_roles()
    if added:
        await audit.record(
            AuditAction.GROUP_MEMBER_ADD, request=request, target=group, detail={"user_id": user_id}
        )
    found = await store.run(store.groups.get, group)
    if found is None:  # deleted meanwhile
        raise HttpApiError(404, f"group {group!r} does not exist", param="group")
    return Group.of(found)


@groups.delete("/{group}/members/{user_id}", status_code=status.HTTP_204_NO_CONTENT, response_class=Response)
async def remove_group_member(
    group: GroupPath,
    user_id: UserId,
    store: StoreDep,
    access: AccessDep,
    guard: GuardDep,
    request: Request,
    audit: AuditDep,
) -> Response:
    if not await store.run(store.groups.remove_member, group, user_id):
        raise HttpApiError(404, f"user {user_id!r} is not in group {group!r}")
    access.forget_cached()
    guard.forget_roles()
    await audit.record(
        AuditAction.GROUP_MEMBER_REMOVE, request=request, target=group, detail={"user_id": user_id}
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)
