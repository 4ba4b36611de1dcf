"""A knowledge base's sources in the web UI, against the real stack (real ingest service and
Celery worker) with a sources root in a temporary folder: add a directory source through the
form, sync it, read the report (2 added) and find both files in the file table; delete one
file on disk, sync again and read "1 removed"; the S3 form's keys go out once and never come
back (only "set"); delete the source.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography.fernet import Fernet
from playwright.sync_api import Page, expect

from tests.ui.conftest import enter_key_when_asked, gateway_client, launch_ui_stack

KB = "ui-sources"
SECRET = "ui-s3-secret-never-shown-again"


@pytest.fixture(scope="module")
def sources_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ui-sources-root")


@pytest.fixture(scope="module")
def api(
    sources_root: Path, tmp_path_factory: pytest.TempPathFactory, output_dir: Path
) -> Iterator[httpx.Client]:
    env = {
        "ZHIKU_INGEST_SOURCES_ROOT": str(sources_root),
        "ZHIKU_INGEST_SOURCES_KEY": Fernet.generate_key().decode(),
    }
    stack = launch_ui_stack(
        tmp_path_factory.mktemp("zhiku-ui-sources"), output_dir / "stack-sources.log", env
    )
    try:
        with gateway_client(stack) as client:
            client.post("/v1/knowledge_bases", json={"name": KB}).raise_for_status()
            yield client
    finally:
        stack.stop()


def sync_and_wait(page: Page, name: str) -> None:
    """Press "Sync now" and wait until the report (shown at once) says the sync succeeded."""
    row = page.locator(f'[data-testid="kb-source-row"][data-name="{name}"]')
    row.get_by_test_id("kb-source-sync").click()
    report = page.get_by_test_id("sync-report")
    expect(report).to_have_attribute("data-source", name)
    expect(report).to_have_attribute("data-state", "succeeded", timeout=120_000)


def test_directory_source_add_sync_report_remove(
    page: Page, api: httpx.Client, sources_root: Path, output_dir: Path
) -> None:
    folder = sources_root / "handbook"
    folder.mkdir()
    (folder / "leave.txt").write_text("Employees get fifteen days of paid annual leave per year.\n")
    (folder / "travel.txt").write_text("Hotel costs are reimbursed up to 180 euros per night.\n")

    page.goto(f"{str(api.base_url).rstrip('/')}/#/kb")
    enter_key_when_asked(page)
    page.locator(f'[data-testid="kb-item"][data-name="{KB}"] button').click()
    expect(page.get_by_test_id("no-sources")).to_be_visible()

    # Add the directory source: the directory form shows, the S3 and web fields do not.
    form = page.get_by_test_id("source-form")
    form.get_by_test_id("source-name").fill("handbook")
    expect(form.get_by_test_id("source-path")).to_be_visible()
    expect(form.get_by_test_id("source-bucket")).to_be_hidden()
    form.get_by_test_id("source-path").fill("handbook")
    with page.expect_request("**/sources") as sent:
        form.get_by_test_id("source-create").click()
    assert json.loads(sent.value.post_data or "{}") == {
        "name": "handbook",
        "kind": "directory",
        "path": "handbook",
    }
    row = page.locator('[data-testid="kb-source-row"][data-name="handbook"]')
    expect(row).to_contain_text("Directory")
    expect(row).to_contain_text("on demand")
    expect(row.get_by_test_id("kb-source-last")).to_have_text("never synced")

    # First sync: both files added, listed in the report and in the file table.
    sync_and_wait(page, "handbook")
    report = page.get_by_test_id("sync-report")
    expect(report.get_by_test_id("sync-added")).to_have_attribute("data-count", "2")
    expect(report.get_by_test_id("sync-added").locator("li")).to_have_text(["leave.txt", "travel.txt"])
    expect(report.get_by_test_id("sync-removed")).to_have_attribute("data-count", "0")
    expect(row.get_by_test_id("kb-source-last")).to_have_text("succeeded 2 added")
    for name in ("leave.txt", "travel.txt"):
        # The page follows the jobs the sync queued: the files end up indexed.
        expect(page.locator(f'[data-testid="file-row"][data-file="{name}"]')).to_have_attribute(
            "data-state", "succeeded", timeout=120_000
        )
    page.screenshot(path=str(output_dir / "kb-sources.png"), full_page=True)

    # A file gone from the folder is removed by the next sync, from the report and the table.
    (folder / "travel.txt").unlink()
    sync_and_wait(page, "handbook")
    expect(report.get_by_test_id("sync-removed")).to_have_attribute("data-count", "1")
    expect(report.get_by_test_id("sync-removed").locator("li")).to_have_text(["travel.txt"])
    expect(report.get_by_test_id("sync-added")).to_have_attribute("data-count", "0")
    expect(report.get_by_test_id("sync-unchanged")).to_have_attribute("data-count", "1")
    expect(row.get_by_test_id("kb-source-last")).to_have_text("succeeded 1 removed · 1 unchanged")
    expect(page.locator('[data-testid="file-row"][data-file="travel.txt"]')).to_have_count(0)
    expect(page.locator('[data-testid="file-row"][data-file="leave.txt"]')).to_have_count(1)
    files = [
        f.get("file_name") or f.get("name") for f in api.get(f"/v1/knowledge_bases/{KB}/files").json()["data"]
    ]
    assert files == ["leave.txt"]

    # A path outside the root: the gateway's 422 reason shows, nothing is added.
    form.get_by_test_id("source-name").fill("escape")
    form.get_by_test_id("source-path").fill("../outside")
    form.get_by_test_id("source-create").click()
    expect(page.get_by_test_id("toast-error").last).to_be_visible()
    expect(page.locator('[data-testid="kb-source-row"][data-name="escape"]')).to_have_count(0)

    # Delete the source: confirmed, gone from the list; its file stays in the knowledge base.
    row.get_by_test_id("kb-source-delete").click()
    page.get_by_test_id("confirm-ok").click()
    expect(page.get_by_test_id("no-sources")).to_be_visible()
    expect(page.locator('[data-testid="file-row"][data-file="leave.txt"]')).to_have_count(1)


def test_s3_keys_are_write_only(page: Page, api: httpx.Client) -> None:
    page.goto(f"{str(api.base_url).rstrip('/')}/#/kb")
    enter_key_when_asked(page)
    page.locator(f'[data-testid="kb-item"][data-name="{KB}"] button').click()
    expect(page.get_by_test_id("no-sources")).to_be_visible()
    form = page.get_by_test_id("source-form")
    form.get_by_test_id("source-name").fill("reports")
    form.get_by_test_id("source-kind").select_option("s3")
    expect(form.get_by_test_id("source-path")).to_be_hidden()
    form.get_by_test_id("source-bucket").fill("docs")
    form.get_by_test_id("source-prefix").fill("2026/")
    form.get_by_test_id("source-endpoint_url").fill("http://127.0.0.1:9/")
    expect(form.get_by_test_id("source-secret_access_key")).to_have_attribute("type", "password")
    form.get_by_test_id("source-access_key_id").fill("ui-access-key")
    form.get_by_test_id("source-secret_access_key").fill(SECRET)
    with page.expect_request("**/sources") as sent:
        form.get_by_test_id("source-create").click()
    body = json.loads(sent.value.post_data or "{}")
    assert body["kind"] == "s3" and body["secret_access_key"] == SECRET and "path" not in body

    row = page.locator('[data-testid="kb-source-row"][data-name="reports"]')
    expect(row).to_contain_text("s3://docs/2026/")
    expect(row.get_by_test_id("kb-source-credentials")).to_have_text("set")
    # The keys left the page with the request: not in the form, not anywhere in the page.
    expect(form.get_by_test_id("source-secret_access_key")).to_have_value("")
    expect(form.get_by_test_id("source-access_key_id")).to_have_value("")
    assert SECRET not in page.content()
    listed = api.get(f"/v1/knowledge_bases/{KB}/sources").text
    assert SECRET not in listed and '"credentials_set":true' in listed

    # The Chinese interface labels the same row.
    page.get_by_test_id("lang-toggle").click()
    expect(page.get_by_test_id("kb-sources").locator("h3")).to_have_text("数据源")
    expect(row.get_by_test_id("kb-source-credentials")).to_have_text("已设置")
    expect(row.get_by_test_id("kb-source-last")).to_have_text("从未同步")


def test_the_page_refreshing_keeps_the_focus_and_text_of_the_source_form(
    page: Page, api: httpx.Client
) -> None:
    """An upload re-renders the file table now and again when its job ends; the source form
    below it stays in place: still focused, still holding what was typed, and it submits."""
    page.goto(f"{str(api.base_url).rstrip('/')}/#/kb")
    enter_key_when_asked(page)
    page.locator(f'[data-testid="kb-item"][data-name="{KB}"] button').click()
    form = page.get_by_test_id("source-form")
    name = form.get_by_test_id("source-name")
    name.click()
    name.press_sequentially("half-typ")
    page.get_by_test_id("upload-input").set_input_files(
        files=[{"name": "refresh.txt", "mimeType": "text/plain", "buffer": b"Parking is free for staff.\n"}]
    )
    row = page.locator('[data-testid="upload-row"][data-file="refresh.txt"]')
    expect(row).to_have_attribute("data-state", "succeeded", timeout=120_000)
    expect(page.locator('[data-testid="file-row"][data-file="refresh.txt"]')).to_have_count(1)
    expect(name).to_be_focused()
    page.keyboard.type("ed")
    expect(name).to_have_value("half-typed")
    form.get_by_test_id("source-path").fill("handbook")
    with page.expect_request("**/sources") as sent:
        form.get_by_test_id("source-create").click()
    assert json.loads(sent.value.post_data or "{}")["name"] == "half-typed"
