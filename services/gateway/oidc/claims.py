"""From a provider's claims to a Zhiku identity and the access its groups map to.

Pure functions, no I/O: the callback hands in the validated ID token claims (merged with the
userinfo answer when the token lacked some) and gets back who signed in and what the
configured group map gives them, or a :class:`MissingClaim` naming what the provider left out.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from services.gateway.config import KnowledgeBaseRole, OidcSettings

ROLE_RANK: dict[str, int] = {"viewer": 1, "editor": 2, "owner": 3}


class MissingClaim(ValueError):
    """The provider's answer lacks a claim sign-in needs (or has it in an unusable shape)."""


@dataclass(frozen=True)
class SsoIdentity:
    """Who signed in, as the provider vouches for them."""

    subject: str
    email: str
    display_name: str
    provider_groups: frozenset[str]


@dataclass(frozen=True)
class MappedAccess:
    """What the group map gives one user: Zhiku groups to be in, their roles, admin or not.

    ``managed_groups`` are every Zhiku group the map names: membership in those follows the
    claim, membership in other groups (given by an admin by hand) is left alone. ``admin`` is
    None when the map names no admin group, so SSO does not decide who is admin.
    """

    groups: frozenset[str]
    managed_groups: frozenset[str]
    admin: bool | None
    group_roles: Mapping[str, Mapping[str, KnowledgeBaseRole]] = field(default_factory=dict)


def claim_at(claims: Mapping[str, Any], path: str) -> Any:
    """The claim at ``path``: a plain name, or dotted (``realm_access.roles``) into objects.

    A claim whose own name has dots (``https://example.com/groups``) is found as such first.
    """
    if path in claims:
        return claims[path]
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def wanted_claims(settings: OidcSettings) -> tuple[str, ...]:
    """Claims to look for in userinfo when the ID token lacks them (the name is optional)."""
    wanted = [settings.email_claim]
    if settings.groups_claim:
        wanted.append(settings.groups_claim)
    return tuple(wanted)


def lacks_any(claims: Mapping[str, Any], settings: OidcSettings) -> bool:
    return any(claim_at(claims, name) is None for name in wanted_claims(settings))


def identity_from_claims(claims: Mapping[str, Any], settings: OidcSettings) -> SsoIdentity:
    """The signed-in person, or MissingClaim when the provider did not say who it is."""
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject:
        raise MissingClaim('the identity provider sent no "sub" claim')
    email = claim_at(claims, settings.email_claim)
    if not isinstance(email, str) or "@" not in email.strip():
        raise MissingClaim(
            f"the identity provider sent no email address in the {settings.email_claim!r} claim "
            "(ask for the email scope, or set ZHIKU_GATEWAY_OIDC_EMAIL_CLAIM)"
        )
    if claims.get("email_verified") is False and settings.email_claim == "email":
        raise MissingClaim("the identity provider says this email address is not verified")
    name = claim_at(claims, settings.name_claim)
    email = email.strip().lower()
    display_name = name.strip() if isinstance(name, str) and name.strip() else email
    return SsoIdentity(subject, email, display_name, provider_groups(claims, settings))


def email_domain_allowed(email: str, settings: OidcSettings) -> bool:
    """``ZHIKU_GATEWAY_OIDC_EMAIL_DOMAINS`` (empty: every domain)."""
    return not settings.email_domains or email.rsplit("@", 1)[-1] in settings.email_domains


def provider_groups(claims: Mapping[str, Any], settings: OidcSettings) -> frozenset[str]:
    """The groups claim as a set of names; absent means none (the user is in no group)."""
    if not settings.groups_claim:
        return frozenset()
    value = claim_at(claims, settings.groups_claim)
    if value is None:
        return frozenset()
    if isinstance(value, str):  # some providers send one group as a plain string
        return frozenset({value})
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return frozenset(value)
    raise MissingClaim(
        f"the {settings.groups_claim!r} claim is not a list of group names (got {type(value).__name__})"
    )


def map_groups(groups: frozenset[str], settings: OidcSettings) -> MappedAccess:
    """Apply ``ZHIKU_GATEWAY_OIDC_GROUP_MAP`` to the provider groups of one user."""
    mapping = settings.group_map
    joined: set[str] = set()
    roles: dict[str, dict[str, KnowledgeBaseRole]] = {}
    admin = False
    for name in sorted(groups & mapping.keys()):
        grant = mapping[name]
        admin = admin or grant.admin
        if grant.group is None:
            continue
        joined.add(grant.group)
        held = roles.setdefault(grant.group, {})
        for kb, role in grant.knowledge_bases.items():
            if ROLE_RANK[role] > ROLE_RANK.get(held.get(kb, ""), 0):
                held[kb] = role
    managed = frozenset(grant.group for grant in mapping.values() if grant.group is not None)
    decides_admin = any(grant.admin for grant in mapping.values())
    return MappedAccess(
        groups=frozenset(joined),
        managed_groups=managed,
        admin=admin if decides_admin else None,
        group_roles=roles,
    )
