"""``zhiku sources``: add a directory source, sync it (the report printed), change the folder,
sync again, list, remove; against a stack launched as ``make run`` launches it."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import Result

from launcher.stack import BackgroundStack, launch_in_background

from .conftest import ADMIN_KEY, FAST_STACK_ENV, OUTPUT, Cli

TEXT = "The night shift checks the harbour lights at nine and again at midnight."


@pytest.fixture(scope="module")
def mounted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mounted")


@pytest.fixture(scope="module")
def sources_cli(tmp_path_factory: pytest.TempPathFactory, mounted: Path) -> Iterator[tuple[Cli, str]]:
    env = {**FAST_STACK_ENV, "ZHIKU_GATEWAY_API_KEYS": ADMIN_KEY, "ZHIKU_INGEST_SOURCES_ROOT": str(mounted)}
    try:
        running: BackgroundStack = launch_in_background(
            tmp_path_factory.mktemp("cli-sources"), OUTPUT / "sources-stack.log", env=env
        )
    except RuntimeError as error:
        pytest.fail(str(error))
    yield Cli(running.url, ADMIN_KEY), running.url
    running.stop()


def ok(result: Result) -> Result:
    assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
    return result


def chunks(url: str, kb: str) -> dict[str, int]:
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        files = httpx.get(f"{url}/v1/knowledge_bases/{kb}/files", headers=headers).json()["data"]
        if all(f["state"] in ("succeeded", "failed") for f in files):
            return {f["name"]: f["chunks"] for f in files}
        time.sleep(0.3)
    raise AssertionError("files not indexed")


def test_sources_add_sync_list_remove(sources_cli: tuple[Cli, str], mounted: Path) -> None:
    cli, url = sources_cli
    (mounted / "night").mkdir()
    (mounted / "night" / "lights.md").write_text(TEXT)
    kb = f"cli-src-{uuid.uuid4().hex[:6]}"
    ok(cli("kb", "create", kb))
    added = ok(cli("sources", "add", kb, "night", "--dir", "night"))
    assert "night" in added.stdout and "directory" in added.stdout

    first = ok(cli("sources", "sync", kb, "night"))
    assert "succeeded" in first.stdout and "added    lights.md" in first.stdout
    assert chunks(url, kb) == {"lights.md": 1}

    (mounted / "night" / "lights.md").unlink()
    (mounted / "night" / "rota.txt").write_text(TEXT.replace("night", "day"))
    second = ok(cli("sources", "sync", kb, "night"))
    assert "added    rota.txt" in second.stdout and "removed  lights.md" in second.stdout
    assert chunks(url, kb) == {"rota.txt": 1}

    listed = ok(cli("sources", "list", kb))
    assert "+1 ~0 -1 !0" in listed.stdout

    outside = cli("sources", "add", kb, "escape", "--dir", "../../etc")
    assert outside.exit_code != 0 and "sources root" in outside.stderr
    both = cli("sources", "add", kb, "both", "--dir", "night", "--url", "http://127.0.0.1:9/")
    assert both.exit_code == 2

    ok(cli("sources", "remove", kb, "night"))
    assert "No sources" in ok(cli("sources", "list", kb)).stdout
