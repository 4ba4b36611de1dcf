"""Single sign-on without a provider: the ``next`` check, claims to identity, the group map
and its configuration. Pure functions and settings; the flow itself is in test_oidc_flow.py."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from services.gateway.config import GatewaySettings, OidcSettings, SsoGrant
from services.gateway.oidc.claims import MissingClaim, identity_from_claims, map_groups
from services.gateway.oidc.next_path import next_path_error

SETTINGS = OidcSettings(
    issuer="https://idp.example.com/realms/acme",
    client_id="zhiku",
    group_map={
        "rag-admins": SsoGrant(admin=True),
        "finance": SsoGrant(group="finance", knowledge_bases={"reports": "viewer"}),
        "finance-leads": SsoGrant(group="finance", knowledge_bases={"reports": "editor", "budget": "owner"}),
        "hr": SsoGrant(group="hr"),
    },
)


@pytest.mark.parametrize("value", ["/", "/kb/handbook?tab=files#top", "/v1/auth/me", "/a/%2F%2Fb"])
def test_local_paths_are_accepted(value: str) -> None:
    assert next_path_error(value) is None


@pytest.mark.parametrize(
    "value",
    [
        "https://evil.example/",
        "//evil.example/path",
        "/\\evil.example",
        "\\\\evil.example",
        "evil.example",
        "javascript:alert(1)",
        "/\tevil",
        "/ /evil",
        "/a\nb",
        "",
        "/" + "a" * 2001,
    ],
)
def test_anything_that_could_leave_the_site_is_refused(value: str) -> None:
    assert next_path_error(value) is not None


def test_identity_takes_email_lower_cased_name_and_groups() -> None:
    identity = identity_from_claims(
        {"sub": "abc", "email": " Ana@Example.COM ", "name": "Ana Lima", "groups": ["finance", "x"]}, SETTINGS
    )
    assert identity.subject == "abc"
    assert identity.email == "ana@example.com"
    assert identity.display_name == "Ana Lima"
    assert identity.provider_groups == {"finance", "x"}


def test_display_name_falls_back_to_the_email_and_no_groups_claim_means_none() -> None:
    identity = identity_from_claims({"sub": "abc", "email": "bo@example.com"}, SETTINGS)
    assert identity.display_name == "bo@example.com"
    assert identity.provider_groups == frozenset()


@pytest.mark.parametrize(
    ("claims", "says"),
    [
        ({"email": "ana@example.com"}, '"sub"'),
        ({"sub": "abc"}, "no email address in the 'email' claim"),
        ({"sub": "abc", "email": "not-an-address"}, "no email address"),
        ({"sub": "abc", "email": "ana@example.com", "email_verified": False}, "not verified"),
        (
            {"sub": "abc", "email": "ana@example.com", "groups": {"finance": True}},
            "not a list of group names",
        ),
        ({"sub": "abc", "email": "ana@example.com", "groups": ["ok", 3]}, "not a list of group names"),
    ],
)
def test_missing_or_unusable_claims_say_which(claims: dict[str, object], says: str) -> None:
    with pytest.raises(MissingClaim, match=says):
        identity_from_claims(claims, SETTINGS)


def test_claims_are_found_at_configured_and_dotted_names() -> None:
    keycloak = SETTINGS.model_copy(
        update={"email_claim": "preferred_username", "groups_claim": "realm_access.roles"}
    )
    identity = identity_from_claims(
        {"sub": "k1", "preferred_username": "Cy@Example.com", "realm_access": {"roles": ["hr"]}}, keycloak
    )
    assert identity.email == "cy@example.com"
    assert identity.provider_groups == {"hr"}
    # A claim whose own name has dots is found as it is, and a lone string is one group.
    namespaced = SETTINGS.model_copy(update={"groups_claim": "https://zhiku.example/groups"})
    identity = identity_from_claims(
        {"sub": "a", "email": "a@b.c", "https://zhiku.example/groups": "finance"}, namespaced
    )
    assert identity.provider_groups == {"finance"}


def test_group_map_gives_groups_roles_and_admin() -> None:
    mapped = map_groups(frozenset({"finance", "finance-leads", "rag-admins", "unmapped"}), SETTINGS)
    assert mapped.groups == {"finance"}
    assert mapped.managed_groups == {"finance", "hr"}
    assert mapped.admin is True
    # Two provider groups onto one Zhiku group: the higher role on each knowledge base wins.
    assert mapped.group_roles == {"finance": {"reports": "editor", "budget": "owner"}}

    plain = map_groups(frozenset({"hr"}), SETTINGS)
    assert plain.groups == {"hr"}
    assert plain.admin is False
    assert dict(plain.group_roles) == {"hr": {}}


def test_sso_decides_admin_only_when_the_map_names_an_admin_group() -> None:
    no_admin_entry = SETTINGS.model_copy(update={"group_map": {"hr": SsoGrant(group="hr")}})
    assert map_groups(frozenset({"hr"}), no_admin_entry).admin is None


def test_group_map_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZHIKU_GATEWAY_OIDC_ISSUER", "https://login.example.com/")
    monkeypatch.setenv("ZHIKU_GATEWAY_OIDC_CLIENT_ID", "zhiku")
    monkeypatch.setenv("ZHIKU_GATEWAY_OIDC_SCOPES", "email groups")
    monkeypatch.setenv(
        "ZHIKU_GATEWAY_OIDC_GROUP_MAP",
        '{"rag-admins": {"admin": true}, '
        '"finance": {"group": "finance", "knowledge_bases": {"reports": "viewer"}}}',
    )
    oidc = GatewaySettings().oidc
    assert oidc.enabled
    assert oidc.issuer == "https://login.example.com"
    assert oidc.scopes == ["openid", "email", "groups"]
    assert oidc.group_map["finance"].knowledge_bases == {"reports": "viewer"}
    assert oidc.group_map["rag-admins"].admin


@pytest.mark.parametrize(
    ("entry", "says"),
    [
        ({"knowledge_bases": {"reports": "viewer"}}, "name the Zhiku group"),
        ({}, 'must name a Zhiku "group"'),
        ({"group": "finance", "knowledge_bases": {"reports": "reader"}}, "viewer"),
        ({"group": "finance", "knowledge_bases": {"no such/name": "viewer"}}, "no such/name"),
        ({"group": "finance", "role": "admin"}, "Extra inputs"),
        ({"group": "Finance Team"}, "not a group name"),
    ],
)
def test_bad_group_map_entries_fail_at_start(entry: dict[str, object], says: str) -> None:
    with pytest.raises(ValidationError, match=says):
        OidcSettings.model_validate(
            {"issuer": "https://idp.example.com", "client_id": "zhiku", "group_map": {"g": entry}}
        )


def test_issuer_needs_a_client_id_and_urls_need_a_scheme() -> None:
    with pytest.raises(ValidationError, match="CLIENT_ID is required"):
        OidcSettings(issuer="https://idp.example.com")
    with pytest.raises(ValidationError, match="http"):
        OidcSettings(issuer="idp.example.com", client_id="zhiku")
    assert not OidcSettings().enabled
