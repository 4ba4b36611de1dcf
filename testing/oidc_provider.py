"""A real OpenID Connect provider for the single sign-on tests, and a way to sign in at it.

``running_provider`` starts ``tests/oidc_provider/server.mjs`` (npm's certified
``oidc-provider``, installed by ``scripts/ensure-oidc-provider.sh``) on a free loopback port
with the given clients and accounts, and stops it afterwards. Its development interactions
are a login form (any password, the account name picks the account) and a consent form;
``sign_in_at_provider`` fills both over plain HTTP for tests that need no browser, and
headless Chromium fills the same forms in the browser test.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import selectors
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import httpx

PROVIDER_DIR = Path(__file__).resolve().parents[1] / "tests" / "oidc_provider"
START_TIMEOUT_S = 30.0
_FORM_ACTION = re.compile(r'<form[^>]*action="([^"]+)"')
_INSTALL_HINT = "run `bash scripts/ensure-oidc-provider.sh` (make test does)"


@dataclass(frozen=True)
class RunningProvider:
    issuer: str
    log_path: Path
    accounts_path: Path

    def set_accounts(self, accounts: Mapping[str, Mapping[str, Any]]) -> None:
        """Change the accounts (their claims) for the next sign-ins: the provider reads the file
        at every sign-in."""
        self.accounts_path.write_text(json.dumps(accounts))


def provider_client(
    client_id: str, redirect_uri: str, client_secret: str | None = None, **metadata: Any
) -> dict[str, Any]:
    """A client registration: confidential with ``client_secret``, else public (PKCE only)."""
    client: dict[str, Any] = {"client_id": client_id, "redirect_uris": [redirect_uri], **metadata}
    if client_secret is None:
        client["token_endpoint_auth_method"] = "none"
    else:
        client["client_secret"] = client_secret
    return client


@contextlib.contextmanager
def running_provider(
    clients: Sequence[Mapping[str, Any]], accounts: Mapping[str, Mapping[str, Any]], port: int = 0
) -> Iterator[RunningProvider]:
    """The provider on ``port`` (0: a free one): ``accounts`` maps login names to their claims.

    A fixed port lets a gateway be configured with the issuer before the provider starts,
    which a test needs when the provider's redirect URI depends on where the gateway came up.
    """
    node = shutil.which("node")
    if node is None:
        raise RuntimeError("node is not installed: the OIDC tests need Node.js 20+")
    if not (PROVIDER_DIR / "node_modules" / "oidc-provider").is_dir():
        raise RuntimeError(f"oidc-provider is not installed in {PROVIDER_DIR}: {_INSTALL_HINT}")
    folder = Path(tempfile.mkdtemp(prefix="zhiku-oidc-provider-"))
    log_path, accounts_path = folder / "provider.log", folder / "accounts.json"
    accounts_path.write_text(json.dumps(accounts))
    config = {"clients": clients, "accountsFile": str(accounts_path), "port": port}
    env = {**os.environ, "ZHIKU_TEST_OIDC_CONFIG": json.dumps(config)}
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [node, "server.mjs"], cwd=PROVIDER_DIR, env=env, stdout=subprocess.PIPE, stderr=log
        )
    try:
        issuer = _read_issuer(process, log_path)
        yield RunningProvider(issuer, log_path, accounts_path)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()


def _read_issuer(process: subprocess.Popen[bytes], log_path: Path) -> str:
    """The first stdout line, ``{"issuer": ...}``, printed once the provider listens."""
    assert process.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        if selector.select(timeout=START_TIMEOUT_S):
            line = process.stdout.readline()
            if line:
                return str(json.loads(line)["issuer"])
    process.kill()
    process.wait()
    raise RuntimeError(f"the OIDC provider did not start:\n{log_path.read_text(errors='replace')[-2000:]}")


async def sign_in_at_provider(
    provider: httpx.AsyncClient, authorize_url: str, login: str, *, max_steps: int = 12
) -> str:
    """Follow the provider from its authorization URL through login and consent, as a browser
    would, and return the URL it finally sends the browser to (the client's redirect URI with
    ``code`` and ``state``, or with ``error``). ``provider`` keeps the provider's cookies."""
    url = authorize_url
    issuer = httpx.URL(authorize_url).copy_with(path="/", query=None, fragment=None)
    for _ in range(max_steps):
        answer = await provider.get(url)
        if answer.is_redirect:
            url = urljoin(url, answer.headers["location"])
            if not url.startswith(str(issuer)):
                return url
            continue
        answer.raise_for_status()
        page = answer.text
        action = _FORM_ACTION.search(page)
        if action is None:
            raise AssertionError(f"no form on the provider's page {url}:\n{page[:1000]}")
        fields = (
            {"prompt": "consent"}
            if 'value="consent"' in page
            else {
                "prompt": "login",
                "login": login,
                "password": "any password",
            }
        )
        answer = await provider.post(urljoin(url, action.group(1)), data=fields)
        if not answer.is_redirect:
            raise AssertionError(
                f"the provider answered {answer.status_code} to {fields['prompt']}: {answer.text[:500]}"
            )
        url = urljoin(url, answer.headers["location"])
        if not url.startswith(str(issuer)):
            return url
    raise AssertionError(f"the provider did not finish within {max_steps} steps (last: {url})")
