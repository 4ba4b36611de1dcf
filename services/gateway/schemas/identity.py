"""JSON shapes of sign-in, users, groups and knowledge-base members (the identity contract)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from services.gateway.store.grants import Grant, HolderKind, Role
from services.gateway.store.users import GroupRecord, UserRecord

# Deliberately loose: one "@" with something on each side. Whether mail arrives is not ours
# to check, and SSO providers vouch for their own addresses.
EMAIL_PATTERN = r"^[^@\s]+@[^@\s]+$"
GROUP_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"

Email = Annotated[
    str, Field(min_length=3, max_length=320, pattern=EMAIL_PATTERN, examples=["ana@example.com"])
]
Password = Annotated[str, Field(min_length=1, max_length=1024, examples=["correct horse battery"])]
GroupName = Annotated[
    str,
    Field(
        pattern=GROUP_PATTERN, description="a slug: lower-case letters, digits, _ and -", examples=["support"]
    ),
]
RoleName = Literal["owner", "editor", "viewer"]
MemberKind = Literal["user", "group"]
ROLE_NAMES: dict[Role, RoleName] = {Role.OWNER: "owner", Role.EDITOR: "editor", Role.VIEWER: "viewer"}


class User(BaseModel):
    id: str = Field(examples=["u_4f0c2b7e9a1d4c3b8e6f5a2d1c0b9e8f"])
    email: str
    display_name: str
    admin: bool
    groups: list[str] = Field(description="names of the groups the user belongs to")
    disabled: bool
    sso: bool = Field(description="made or linked by single sign-on")
    created_at: float = Field(description="unix seconds")

    @classmethod
    def of(cls, record: UserRecord) -> User:
        return cls(
            id=record.id,
            email=record.email,
            display_name=record.display_name,
            admin=record.admin,
            groups=list(record.groups),
            disabled=record.disabled,
            sso=record.sso,
            created_at=record.created_at,
        )


class AuthConfig(BaseModel):
    password: bool = Field(description="email and password sign-in is offered")
    sso: bool = Field(description="single sign-on is configured")
    sso_label: str = Field(description='what the "Sign in with ..." button says')


class Login(BaseModel):
    model_config = ConfigDict(extra="ignore")

    email: Email
    password: Password


class SignedIn(BaseModel):
    user: User
    csrf_token: str = Field(description="send as X-CSRF-Token with every cookie-authenticated write")


class Me(BaseModel):
    user: User | None = Field(description="null for keys that belong to no user and an open gateway")
    csrf_token: str = Field(description="the session's CSRF token; empty unless signed in")
    auth: Literal["session", "key", "open"]


class CreateUser(BaseModel):
    model_config = ConfigDict(extra="ignore")

    email: Email
    display_name: str = Field(default="", max_length=200, examples=["Ana Lima"])
    password: Password | None = Field(default=None, description="null: the user signs in through SSO only")
    admin: bool = False


class UpdateUser(BaseModel):
    model_config = ConfigDict(extra="ignore")

    display_name: str | None = Field(default=None, max_length=200)
    password: Password | None = None
    admin: bool | None = None
    disabled: bool | None = Field(default=None, description="a disabled user loses access at once")


class UserList(BaseModel):
    data: list[User]


class CreateGroup(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: GroupName
    display_name: str = Field(default="", max_length=200, examples=["Support team"])


class Group(BaseModel):
    name: str
    display_name: str
    created_at: float
    members: list[str] | None = Field(description="user ids; shown to admins only (null for others)")

    @classmethod
    def of(cls, record: GroupRecord, with_members: bool = True) -> Group:
        members = list(record.members) if with_members else None
        return cls(
            name=record.name, display_name=record.display_name, created_at=record.created_at, members=members
        )


class GroupList(BaseModel):
    data: list[Group]


class Member(BaseModel):
    kind: MemberKind
    id: str = Field(description="a user id or a group name")
    name: str = Field(description="the user's email or the group's display name")
    role: RoleName

    @classmethod
    def of(cls, grant: Grant, name: str) -> Member:
        kind: MemberKind = "user" if grant.kind is HolderKind.USER else "group"
        return cls(kind=kind, id=grant.holder, name=name, role=ROLE_NAMES[grant.role])


class MemberList(BaseModel):
    members: list[Member]


class SetMember(BaseModel):
    model_config = ConfigDict(extra="ignore")

    kind: MemberKind
    id: str = Field(
        min_length=1,
        max_length=320,
        description="a user id (or the user's email) or a group name",
        examples=["u_4f0c2b7e9a1d4c3b8e6f5a2d1c0b9e8f"],
    )
    role: RoleName
