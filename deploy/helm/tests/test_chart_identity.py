"""People, sign-in and single sign-on in the chart (gateway.identity, gateway.oidc).

The rendered environment of each pod (ConfigMap and Secret through envFrom, then its own env,
secretKeyRefs resolved against Secrets that "exist") is read back through the gateway's own
GatewaySettings, so the chart and the code agree on names and formats. Several replicas are
checked the way they fail in production: each pod's OIDC flow-cookie key, computed by the
gateway's own flow_secret, must be the same.
"""

from __future__ import annotations

import base64
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_chart import CHART, HELM, ROOT, container, deployments, is_config, render, run_helm

from services.gateway.config import GatewaySettings, SsoGrant
from services.gateway.oidc.client import flow_secret
from tests.ops.test_identity_env import IDENTITY

ISSUER = "https://sso.example.com/realms/acme"
GROUP_MAP = {
    "rag-admins": {"admin": True},
    "finance": {"group": "finance", "knowledge_bases": {"finance-reports": "viewer", "财务": "editor"}},
}
# Secrets that already exist in the namespace (what `kubectl create secret` would have made).
EXISTING = {
    ("zhiku-admin", "admin-password"): "from-admin-secret",
    ("zhiku-sso", "client-secret"): "from-sso-secret",
    ("zhiku-sso", "state-secret"): "state-from-sso-secret",
}
SECRET_NAMES = {
    "ZHIKU_GATEWAY_ADMIN_PASSWORD",
    "ZHIKU_GATEWAY_OIDC_CLIENT_SECRET",
    "ZHIKU_GATEWAY_OIDC_STATE_SECRET",
}


@pytest.fixture(scope="session")
def helm() -> Path:
    if not HELM.exists():
        subprocess.run(["bash", str(ROOT / "scripts" / "install-helm.sh")], check=True, cwd=ROOT)
    return HELM


def values_file(tmp_path: Path, values: dict[str, Any]) -> str:
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values, allow_unicode=True), encoding="utf-8")
    return str(path)


def sso_values(**oidc: Any) -> dict[str, Any]:
    return {"gateway": {"oidc": {"issuer": ISSUER, "clientId": "zhiku", **oidc}}}


def config_and_secret(docs: list[dict[str, Any]]) -> tuple[dict[str, str], dict[str, str]]:
    (config,) = [d for d in docs if is_config(d)]
    (secret,) = [d for d in docs if d["kind"] == "Secret"]
    data = secret.get("data") or {}
    return config["data"], {k: base64.b64decode(v).decode() for k, v in data.items()}


def environment(docs: list[dict[str, Any]], component: str = "gateway") -> dict[str, str]:
    """What the pod's process sees: ConfigMap and Secret (envFrom), then its own env over them,
    secretKeyRefs read from the chart's Secret or from EXISTING."""
    config, secret = config_and_secret(docs)
    (chart_secret,) = [d["metadata"]["name"] for d in docs if d["kind"] == "Secret"]
    env = {**config, **secret}
    for item in container(deployments(docs)[component]).get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
            continue
        ref = item["valueFrom"]["secretKeyRef"]
        env[item["name"]] = (
            secret[ref["key"]] if ref["name"] == chart_secret else EXISTING[(ref["name"], ref["key"])]
        )
    return env


def settings_in(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> GatewaySettings:
    with monkeypatch.context() as patch:
        for name in list(os.environ):
            if name.startswith("ZHIKU_"):
                patch.delenv(name)
        for name, value in env.items():
            patch.setenv(name, value)
        return GatewaySettings()


def notes(helm: Path, *args: str) -> str:
    """NOTES.txt as `helm install` prints it (client-side dry run: no cluster needed)."""
    result = subprocess.run(
        [str(helm), "install", "zhiku", str(CHART), "--namespace", "zhiku", "--dry-run=client", *args],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.split("\nNOTES:\n", 1)[1]


# ------------------------------------------------------------------------------ values -> settings


def test_default_render_marks_the_cookie_secure_and_leaves_sso_off(
    helm: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    docs = render(helm)
    config, secret = config_and_secret(docs)
    assert config["ZHIKU_GATEWAY_SESSION_COOKIE_SECURE"] == "true"
    assert not any(name.startswith("ZHIKU_GATEWAY_OIDC_") for name in config)
    assert "ZHIKU_GATEWAY_ADMIN_EMAIL" not in config
    assert not SECRET_NAMES & set(secret)
    settings = settings_in(environment(docs), monkeypatch)
    assert settings.session_cookie_secure is True
    assert not settings.oidc.enabled
    # Unset values keep the gateway's own defaults.
    defaults = GatewaySettings.model_fields
    assert settings.trusted_proxies == ["127.0.0.1"]
    assert settings.audit_retention_days == defaults["audit_retention_days"].default
    assert settings.session_ttl_s == defaults["session_ttl_s"].default


def test_identity_and_sso_values_reach_the_gateway(
    helm: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    values = {
        "gateway": {
            "identity": {
                "adminEmail": "Admin@Example.com",
                "adminPassword": "s3cret-admin",
                "sessionCookieSecure": None,
                "sessionTtlS": 3600,
                "trustedProxies": ["10.244.0.0/16", "10.0.0.7"],
                "userRateLimitPerMinute": 120,
                "uploadsPerDay": 1000000,
                "auditRetentionDays": 30.5,
            },
            "oidc": {
                "issuer": ISSUER,
                "clientId": "zhiku",
                "clientSecret": "s3cret-client",
                "stateSecret": "s3cret-state",
                "scopes": ["openid", "email", "profile", "groups"],
                "redirectUrl": "https://zhiku.example.com/v1/auth/oidc/callback",
                "label": "Acme ID",
                "emailClaim": "preferred_username",
                "nameClaim": "given_name",
                "groupsClaim": "realm_access.roles",
                "groupMap": GROUP_MAP,
                "autoCreateUsers": False,
                "emailDomains": ["example.com", "example.cn"],
            },
        }
    }
    docs = render(helm, "-f", values_file(tmp_path, values))
    config, secret = config_and_secret(docs)
    # Secrets live in the Secret only.
    assert {
        "ZHIKU_GATEWAY_ADMIN_PASSWORD": "s3cret-admin",
        "ZHIKU_GATEWAY_OIDC_CLIENT_SECRET": "s3cret-client",
        "ZHIKU_GATEWAY_OIDC_STATE_SECRET": "s3cret-state",
    }.items() <= secret.items()
    assert not SECRET_NAMES & set(config)
    assert not any(word in value for value in config.values() for word in ("s3cret-admin", "s3cret-client"))
    # null leaves the setting out: the gateway decides per request.
    assert "ZHIKU_GATEWAY_SESSION_COOKIE_SECURE" not in config
    # Every identity and SSO setting of the gateway is a value of the chart.
    missing = IDENTITY - {"ZHIKU_GATEWAY_SESSION_COOKIE_SECURE"} - set(environment(docs))
    assert not missing, f"settings without a gateway.identity / gateway.oidc value: {sorted(missing)}"

    s = settings_in(environment(docs), monkeypatch)
    assert s.admin_email == "Admin@Example.com"
    assert s.admin_password.get_secret_value() == "s3cret-admin"
    assert s.session_cookie_secure is None
    assert s.session_ttl_s == 3600
    assert s.trusted_proxies == ["10.244.0.0/16", "10.0.0.7"]
    assert (s.user_rate_limit_per_minute, s.uploads_per_day, s.audit_retention_days) == (120, 1000000, 30.5)
    o = s.oidc
    assert o.enabled and o.issuer == ISSUER and o.client_id == "zhiku"
    assert o.client_secret.get_secret_value() == "s3cret-client"
    assert o.state_secret.get_secret_value() == "s3cret-state"
    assert o.scopes == ["openid", "email", "profile", "groups"]
    assert o.redirect_url == "https://zhiku.example.com/v1/auth/oidc/callback"
    assert (o.label, o.email_claim, o.name_claim, o.groups_claim) == (
        "Acme ID",
        "preferred_username",
        "given_name",
        "realm_access.roles",
    )
    assert o.group_map == {
        "rag-admins": SsoGrant(admin=True),
        "finance": SsoGrant(group="finance", knowledge_bases={"finance-reports": "viewer", "财务": "editor"}),
    }
    assert o.auto_create_users is False
    assert o.email_domains == ["example.com", "example.cn"]


def test_an_empty_groups_claim_turns_group_sync_off(
    helm: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    docs = render(helm, "-f", values_file(tmp_path, sso_values(clientSecret="c", groupsClaim="")))
    assert config_and_secret(docs)[0]["ZHIKU_GATEWAY_OIDC_GROUPS_CLAIM"] == ""
    assert settings_in(environment(docs), monkeypatch).oidc.groups_claim == ""
    # Unset (null), the gateway's default claim stays.
    docs = render(helm, "-f", values_file(tmp_path, sso_values(clientSecret="c")))
    assert "ZHIKU_GATEWAY_OIDC_GROUPS_CLAIM" not in config_and_secret(docs)[0]
    assert settings_in(environment(docs), monkeypatch).oidc.groups_claim == "groups"


def test_existing_secrets_reach_only_the_gateway(
    helm: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    values = sso_values(existingSecret="zhiku-sso", stateSecretKey="state-secret")
    values["gateway"]["identity"] = {"adminEmail": "admin@example.com", "existingSecret": "zhiku-admin"}
    docs = render(helm, "-f", values_file(tmp_path, values))
    _, secret = config_and_secret(docs)
    assert not SECRET_NAMES & set(secret), "existing Secrets are referenced, not copied"
    for component, deployment in deployments(docs).items():
        refs = {
            (e["valueFrom"]["secretKeyRef"]["name"], e["valueFrom"]["secretKeyRef"]["key"])
            for e in container(deployment).get("env", [])
            if "valueFrom" in e
        }
        if component == "gateway":
            assert set(EXISTING) <= refs
        else:
            assert not refs & set(EXISTING), component
    s = settings_in(environment(docs), monkeypatch)
    assert s.admin_password.get_secret_value() == "from-admin-secret"
    assert s.oidc.client_secret.get_secret_value() == "from-sso-secret"
    assert s.oidc.state_secret.get_secret_value() == "state-from-sso-secret"


# ------------------------------------------------------------------------------ several replicas


@pytest.mark.parametrize(
    "extra",
    [
        {"clientSecret": "shared-client-secret"},
        {"stateSecret": "shared-state-secret"},
        {"existingSecret": "zhiku-sso"},
        {"existingSecret": "zhiku-sso", "clientSecretKey": "", "stateSecretKey": "state-secret"},
    ],
    ids=["client-secret", "state-secret", "existing-client-secret", "existing-state-secret"],
)
def test_replicas_sign_the_state_cookie_with_one_key(
    helm: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, extra: dict[str, str]
) -> None:
    values = sso_values(**extra)
    values["gateway"]["replicaCount"] = 3
    docs = render(helm, "-f", values_file(tmp_path, values))
    assert deployments(docs)["gateway"]["spec"]["replicas"] == 3
    env = environment(docs)
    # Each pod starts its own gateway from the same environment: the keys must agree.
    keys = {flow_secret(settings_in(env, monkeypatch).oidc) for _ in range(3)}
    assert len(keys) == 1


@pytest.mark.parametrize(
    "scale",
    [["--set", "gateway.replicaCount=2"], ["--set", "autoscaling.enabled=true"]],
    ids=["replicas", "autoscaled"],
)
def test_replicas_without_a_shared_key_are_refused(helm: Path, tmp_path: Path, scale: list[str]) -> None:
    result = run_helm(helm, "-f", values_file(tmp_path, sso_values()), *scale)
    assert result.returncode != 0
    assert "several gateway replicas need one key for the sign-in state cookie" in result.stderr


def test_one_replica_of_a_public_client_is_allowed(
    helm: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Why the check exists: without a configured key each start draws its own."""
    docs = render(helm, "-f", values_file(tmp_path, sso_values()))
    env = environment(docs)
    assert "ZHIKU_GATEWAY_OIDC_STATE_SECRET" not in env
    first, second = (flow_secret(settings_in(env, monkeypatch).oidc) for _ in range(2))
    assert first != second


def test_a_state_secret_from_extra_env_counts(helm: Path, tmp_path: Path) -> None:
    values = sso_values()
    values["gateway"]["replicaCount"] = 2
    values["gateway"]["extraEnv"] = [
        {
            "name": "ZHIKU_GATEWAY_OIDC_STATE_SECRET",
            "valueFrom": {"secretKeyRef": {"name": "zhiku-sso", "key": "state-secret"}},
        }
    ]
    assert run_helm(helm, "-f", values_file(tmp_path, values)).returncode == 0


def test_an_existing_shared_secret_is_trusted_with_a_note(helm: Path, tmp_path: Path) -> None:
    """secrets.existingSecret may hold the key; the chart cannot look, so it says what must be there."""
    values = sso_values()
    values["gateway"]["replicaCount"] = 2
    values["secrets"] = {"existingSecret": "zhiku-secrets"}
    text = notes(helm, "-f", values_file(tmp_path, values))
    assert (
        "Secret zhiku-secrets holds\nZHIKU_GATEWAY_OIDC_CLIENT_SECRET or ZHIKU_GATEWAY_OIDC_STATE_SECRET"
        in text
    )


# ------------------------------------------------------------------------------ redirect URL


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--set", "gateway.ingress.enabled=true"], "http://zhiku.local/v1/auth/oidc/callback"),
        (
            [
                "--set",
                "gateway.ingress.enabled=true",
                "--set-json",
                'gateway.ingress.hosts=[{"host":"zhiku.example.com","paths":[{"path":"/","pathType":"Prefix"}]}]',
                "--set-json",
                'gateway.ingress.tls=[{"secretName":"zhiku-tls","hosts":["zhiku.example.com"]}]',
            ],
            "https://zhiku.example.com/v1/auth/oidc/callback",
        ),
        (
            [
                "--set",
                "gateway.ingress.enabled=true",
                "--set",
                "gateway.oidc.redirectUrl=https://rag.example.com/v1/auth/oidc/callback",
            ],
            "https://rag.example.com/v1/auth/oidc/callback",
        ),
        ([], None),
    ],
    ids=["ingress-http", "ingress-tls", "explicit", "no-ingress"],
)
def test_redirect_url_follows_the_ingress(
    helm: Path, tmp_path: Path, args: list[str], expected: str | None
) -> None:
    docs = render(helm, "-f", values_file(tmp_path, sso_values(clientSecret="c")), *args)
    assert config_and_secret(docs)[0].get("ZHIKU_GATEWAY_OIDC_REDIRECT_URL") == expected


# ------------------------------------------------------------------------------ refused values


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "gateway.oidc.issuer=" + ISSUER], "gateway.oidc.issuer needs gateway.oidc.clientId"),
        (["--set", "gateway.identity.adminPassword=correct-horse"], "needs gateway.identity.adminEmail"),
        (
            [
                "--set",
                "gateway.identity.adminEmail=a@example.com",
                "--set",
                "gateway.identity.adminPassword=correct-horse",
                "--set",
                "gateway.identity.existingSecret=zhiku-admin",
            ],
            "set either gateway.identity.adminPassword or gateway.identity.existingSecret",
        ),
        (
            [
                "--set",
                "gateway.identity.adminEmail=a@example.com",
                "--set",
                "gateway.identity.adminPassword=correct-horse",
                "--set",
                "secrets.existingSecret=zhiku-secrets",
            ],
            "ZHIKU_GATEWAY_OIDC_STATE_SECRET into zhiku-secrets",
        ),
        (
            ["--set", "gateway.oidc.clientSecret=c", "--set", "gateway.oidc.existingSecret=zhiku-sso"],
            "set either gateway.oidc.clientSecret or gateway.oidc.existingSecret",
        ),
        (
            ["--set", "gateway.oidc.existingSecret=zhiku-sso", "--set", "gateway.oidc.clientSecretKey="],
            "gateway.oidc.existingSecret names no key",
        ),
    ],
    ids=[
        "no-client-id",
        "password-without-email",
        "two-passwords",
        "shared-secret",
        "two-client-secrets",
        "no-key",
    ],
)
def test_inconsistent_identity_values_are_refused(helm: Path, args: list[str], message: str) -> None:
    result = run_helm(helm, *args)
    assert result.returncode != 0
    assert message in result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["--set", "gateway.identity.sessionCookieSecure=yes"],
        ["--set", "gateway.identity.adminEmail=not-an-email"],
        [
            "--set",
            "gateway.identity.adminEmail=a@example.com",
            "--set",
            "gateway.identity.adminPassword=short",
        ],
        ["--set", "gateway.identity.uploadsPerDay=-1"],
        ["--set", "gateway.oidc.issuer=sso.example.com"],
        ["--set", "gateway.oidc.scopes={openid email}"],
        ["--set-json", 'gateway.oidc.groupMap={"g":{}}'],
        ["--set-json", 'gateway.oidc.groupMap={"g":{"group":"Finance"}}'],
        ["--set-json", 'gateway.oidc.groupMap={"g":{"group":"f","knowledge_bases":{"kb":"boss"}}}'],
        ["--set-json", 'gateway.oidc.groupMap={"g":{"admin":true,"knowledge_bases":{"kb":"viewer"}}}'],
        ["--set-json", 'gateway.oidc.groupMap={"g":{"group":"f","roles":["viewer"]}}'],
    ],
    ids=[
        "cookie-flag",
        "email",
        "short-password",
        "negative-limit",
        "issuer-url",
        "scope-with-space",
        "empty-grant",
        "group-slug",
        "role",
        "roles-without-group",
        "unknown-key",
    ],
)
def test_schema_rejects_wrong_identity_values(helm: Path, args: list[str]) -> None:
    result = run_helm(helm, *args)
    assert result.returncode != 0, args
    assert "schema" in result.stderr


def test_every_group_map_the_schema_accepts_the_gateway_accepts(
    helm: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    grants = {
        "a": {"admin": True},
        "b": {"group": "team-b"},
        "c": {"group": "team_c", "admin": True, "knowledge_bases": {"kb.v2": "owner"}},
        "d": {"group": "d", "admin": False},
    }
    docs = render(helm, "-f", values_file(tmp_path, sso_values(clientSecret="c", groupMap=grants)))
    assert set(settings_in(environment(docs), monkeypatch).oidc.group_map) == set(grants)


# ------------------------------------------------------------------------------ NOTES


def test_notes_say_how_to_sign_in(helm: Path, tmp_path: Path) -> None:
    values = sso_values(clientSecret="c", label="Acme ID")
    values["gateway"]["identity"] = {"adminEmail": "admin@example.com", "adminPassword": "correct-horse"}
    values["gateway"]["ingress"] = {
        "enabled": True,
        "tls": [{"secretName": "zhiku-tls", "hosts": ["zhiku.local"]}],
    }
    values["gateway"]["identity"]["trustedProxies"] = ["10.244.0.0/16"]
    text = notes(helm, "-f", values_file(tmp_path, values))
    assert "First admin: admin@example.com" in text
    assert "get secret zhiku-secrets -o jsonpath='{.data.ZHIKU_GATEWAY_ADMIN_PASSWORD}' | base64 -d" in text
    assert 'Single sign-on: "Sign in with Acme ID" through ' + ISSUER in text
    assert "https://zhiku.local/v1/auth/oidc/callback" in text
    assert "WARNING" not in text and "trustedProxies is empty" not in text


def test_notes_warn_about_insecure_setups(helm: Path) -> None:
    text = notes(helm, "--set", "gateway.ingress.enabled=true")
    assert "no TLS block\nof the ingress names zhiku.local" in text
    assert "trustedProxies is empty" in text
    assert "the API is open to anyone" in text
    assert "No people are configured" in text
    closed = notes(
        helm,
        "--set",
        "gateway.identity.adminEmail=a@example.com",
        "--set",
        "gateway.oidc.issuer=" + ISSUER,
        "--set",
        "gateway.oidc.clientId=z",
    )
    assert "the API is open" not in closed
    assert "through single sign-on with that email" in closed
