"""The CLI's stored sign-in: owner-only file, one entry per gateway, forgetting one keeps others;
and the loopback listener of ``zhiku login --sso``, driven over real HTTP on 127.0.0.1."""

from __future__ import annotations

import stat
import threading
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import httpx
import pytest

from services.cli import credentials
from services.cli.credentials import Credentials
from services.cli.sso import HandedKey, LoopbackLogin


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_saved_owner_only_per_gateway_and_forgotten(tmp_path: Path) -> None:
    path = tmp_path / "conf" / "config.json"
    session = Credentials(email="ann@example.com", session="s3cr3t", csrf_token="tok")
    credentials.save("http://gw-a:8000/", session, path)
    credentials.save(
        "http://gw-b:8000", Credentials(email="bob@example.com", api_key="sk-b", key_id="k1"), path
    )
    assert mode(path) == 0o600
    assert mode(path.parent) == 0o700
    # The trailing slash does not make another gateway.
    assert credentials.load("http://gw-a:8000", path) == session
    assert credentials.load("http://gw-b:8000/", path) == Credentials(
        email="bob@example.com", api_key="sk-b", key_id="k1"
    )
    assert credentials.load("http://gw-c:8000", path) is None
    assert credentials.forget("http://gw-a:8000", path) is True
    assert credentials.forget("http://gw-a:8000", path) is False
    assert credentials.load("http://gw-a:8000", path) is None
    assert credentials.load("http://gw-b:8000", path) is not None
    assert not list(path.parent.glob(".*.tmp")), "no temporary file left behind"


def test_a_wider_existing_file_is_narrowed(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text("{}")
    path.chmod(0o644)
    credentials.save("http://gw", Credentials(email="a@example.com", session="s"), path)
    assert mode(path) == 0o600


def test_config_path_follows_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ZHIKU_CONFIG", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert credentials.config_path() == tmp_path / "xdg" / "zhiku" / "config.json"
    monkeypatch.setenv("ZHIKU_CONFIG", str(tmp_path / "mine.json"))
    assert credentials.config_path() == tmp_path / "mine.json"


def test_unreadable_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text("{not json")
    with pytest.raises(ValueError, match="cannot read the zhiku config file"):
        credentials.load("http://gw", path)


def test_loopback_takes_only_the_callback_with_its_state() -> None:
    listener = LoopbackLogin()
    url = listener.login_url("http://gateway:8000/")
    parts = urlsplit(url)
    assert parts.netloc == "gateway:8000" and parts.path == "/v1/auth/oidc/login"
    next_path = unquote(parse_qs(parts.query)["next"][0])
    assert next_path == f"/#/cli-login?port={listener.port}&state={listener.state}"

    results: list[HandedKey | None] = []
    waiter = threading.Thread(target=lambda: results.append(listener.wait(10)))
    waiter.start()
    base = f"http://127.0.0.1:{listener.port}"
    with httpx.Client(timeout=5) as http:
        forged = http.get(f"{base}/callback", params={"key": "sk-evil", "state": "guessed"})
        assert forged.status_code == 400
        assert http.get(f"{base}/other", params={"key": "k", "state": listener.state}).status_code == 400
        good = http.get(f"{base}/callback", params={"key": "sk-real", "id": "key_1", "state": listener.state})
        assert good.status_code == 200 and "You may close this tab" in good.text
    waiter.join(10)
    handed = results[0]
    assert handed == HandedKey("sk-real", "key_1")


def test_loopback_times_out_with_none() -> None:
    assert LoopbackLogin().wait(0.3) is None
