"""Identity settings in compose: .env.example shows every one, and its examples work.

The examples are commented out (the stack runs with no .env); uncommented, the real compose
binary resolves them into the gateway's environment and GatewaySettings must accept the result
with single sign-on on, so an example that drifts from the settings' format fails here.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from services.gateway.config import GatewaySettings, OidcSettings, SsoGrant
from tests.ops.test_settings_parity import COMPOSE_BIN, REPO, env_names

# The gateway's people, session and audit settings beside the OIDC ones.
IDENTITY_FIELDS = (
    "admin_email",
    "admin_password",
    "session_ttl_s",
    "session_cookie_secure",
    "trusted_proxies",
    "user_rate_limit_per_minute",
    "uploads_per_day",
    "audit_retention_days",
)
IDENTITY = {f"ZHIKU_GATEWAY_{name.upper()}" for name in IDENTITY_FIELDS} | env_names(OidcSettings)


def examples() -> dict[str, str]:
    """Commented `# ZHIKU_...=value` lines of .env.example, as name -> the line uncommented."""
    found = {}
    for line in (REPO / ".env.example").read_text(encoding="utf-8").splitlines():
        match = re.match(r"^# (ZHIKU_[A-Z0-9_]+)=", line)
        if match:
            found[match[1]] = line[2:]
    return found


def test_every_identity_setting_has_an_example() -> None:
    assert set(GatewaySettings.model_fields) >= set(IDENTITY_FIELDS)
    missing = sorted(IDENTITY - set(examples()))
    assert not missing, f".env.example lacks commented examples of {missing}"


def test_the_examples_configure_a_working_gateway(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lines = examples()
    shutil.copy(REPO / "docker-compose.yml", tmp_path / "docker-compose.yml")
    (tmp_path / ".env").write_text("".join(f"{lines[name]}\n" for name in sorted(IDENTITY)), encoding="utf-8")
    out = subprocess.run(
        [str(COMPOSE_BIN), "-f", str(tmp_path / "docker-compose.yml"), "config", "--format", "json"],
        check=True,
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    env = json.loads(out.stdout)["services"]["gateway"]["environment"]
    assert set(env) >= IDENTITY, "compose does not pass every identity setting to the gateway"
    for name in list(os.environ):
        if name.startswith("ZHIKU_"):
            monkeypatch.delenv(name)
    for name in IDENTITY:
        monkeypatch.setenv(name, env[name])
    settings = GatewaySettings()
    assert settings.admin_email and settings.admin_password.get_secret_value()
    assert settings.session_cookie_secure is True
    assert settings.trusted_proxies and all(
        "/" in proxy or "." in proxy for proxy in settings.trusted_proxies
    )
    assert settings.oidc.enabled and settings.oidc.client_id
    assert settings.oidc.group_map["finance"] == SsoGrant(
        group="finance", knowledge_bases={"finance-reports": "viewer"}
    )
    assert settings.oidc.group_map["rag-admins"].admin
