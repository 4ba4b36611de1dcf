"""Every ``zhiku`` command against a running stack (real gateway, services, Celery worker).

Knowledge bases are named per test, so the tests do not depend on each other's order; the
shared ``handbook`` knowledge base is built by ``zhiku ingest`` itself in a fixture.
"""

from __future__ import annotations

import re
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from typer.testing import Result

from launcher.stack import BackgroundStack, free_port
from services.cli.context import EXIT_AUTH, EXIT_FAILED, EXIT_NOT_FOUND, EXIT_UNREACHABLE
from services.cli.tests.conftest import ADMIN_KEY, Cli

LEAVE = (
    "Annual leave policy.\n"
    "Employees request annual leave through the HR portal at least two weeks in advance. "
    "Managers approve leave requests within three working days.\n"
)
EXPENSES = (
    "Expense reports.\n"
    "Travel expenses are reimbursed within thirty days after the receipts are uploaded to the "
    "finance system.\n"
)


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def ok(result: Result) -> Result:
    assert result.exit_code == 0, f"exit {result.exit_code}\n{result.output}"
    return result


def no_traceback(result: Result) -> None:
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception


@dataclass
class Ingested:
    kb: str
    result: Result


@pytest.fixture(scope="module")
def handbook(cli: Cli, tmp_path_factory: pytest.TempPathFactory) -> Ingested:
    """A knowledge base filled by ``zhiku ingest`` from a directory with a nested file."""
    folder = tmp_path_factory.mktemp("handbook")
    (folder / "leave.txt").write_text(LEAVE, encoding="utf-8")
    (folder / "finance").mkdir()
    (folder / "finance" / "expenses.md").write_text(EXPENSES, encoding="utf-8")
    (folder / ".hidden").write_text("editor swap file", encoding="utf-8")
    kb = unique("handbook")
    ok(cli("kb", "create", kb, "--description", "company handbook"))
    return Ingested(kb, cli("ingest", str(folder), "--kb", kb))


def test_kb_create_list_and_duplicate(cli: Cli) -> None:
    kb = unique("create")
    created = ok(cli("kb", "create", kb, "-d", "for the list test"))
    assert f"Created knowledge base {kb}" in created.stdout
    listed = ok(cli("kb", "list")).stdout
    row = next(line for line in listed.splitlines() if kb in line)
    assert "for the list test" in row
    again = cli("kb", "create", kb)
    assert again.exit_code == EXIT_FAILED
    assert "already exists" in again.stderr and "409" in again.stderr
    no_traceback(again)


def test_kb_names_in_chinese_round_trip(cli: Cli) -> None:
    kb = unique("员工手册")
    ok(cli("kb", "create", kb))
    assert "Files in" in ok(cli("kb", "files", kb)).stdout
    ok(cli("kb", "delete", kb, "--yes"))
    assert kb not in ok(cli("kb", "list")).stdout


def test_kb_delete_asks_first(cli: Cli) -> None:
    kb = unique("delete")
    ok(cli("kb", "create", kb))
    refused = cli("kb", "delete", kb, input="n\n")
    assert refused.exit_code != 0
    assert f"Delete knowledge base '{kb}'" in refused.output
    assert kb in ok(cli("kb", "list")).stdout
    confirmed = ok(cli("kb", "delete", kb, input="y\n"))
    assert f"Deleted knowledge base {kb}" in confirmed.stdout
    assert kb not in ok(cli("kb", "list")).stdout
    ok(cli("kb", "create", kb))
    ok(cli("kb", "delete", kb, "--yes"))
    assert kb not in ok(cli("kb", "list")).stdout
    missing = cli("kb", "delete", kb, "--yes")
    assert missing.exit_code == EXIT_NOT_FOUND
    assert kb in missing.stderr and "404" in missing.stderr


def test_kb_migrate_names_the_job_and_refuses_unserved_models(cli: Cli) -> None:
    kb = unique("migrate")
    ok(cli("kb", "create", kb))
    unserved = cli("kb", "migrate", kb, "bge-m3")
    no_traceback(unserved)
    assert unserved.exit_code == EXIT_FAILED
    assert "'bge-m3' is not served" in unserved.stderr and "422" in unserved.stderr
    missing = cli("kb", "migrate", unique("nope"), "e5")
    assert missing.exit_code == EXIT_NOT_FOUND


def test_ingest_walks_directories_and_waits_for_every_job(cli: Cli, handbook: Ingested) -> None:
    ok(handbook.result)
    assert "2 files: 2 succeeded" in handbook.result.stdout
    files = ok(cli("kb", "files", handbook.kb)).stdout
    for name in ("leave.txt", "expenses.md"):
        row = next(line for line in files.splitlines() if name in line)
        assert "succeeded" in row
        assert re.search(r"│\s+[1-9]\d*\s+│", row), row  # chunks > 0
    assert ".hidden" not in files


def test_ingest_again_reports_unchanged_files_and_override_reindexes(cli: Cli, tmp_path: Path) -> None:
    kb = unique("again")
    ok(cli("kb", "create", kb))
    (tmp_path / "leave.txt").write_text(LEAVE, encoding="utf-8")
    assert "1 files: 1 succeeded" in ok(cli("ingest", str(tmp_path), "--kb", kb)).stdout
    assert "1 files: 1 unchanged" in ok(cli("ingest", str(tmp_path), "--kb", kb)).stdout
    forced = ok(
        cli("ingest", str(tmp_path), "--kb", kb, "--override", "--chunk-size", "60", "--chunk-overlap", "0")
    )
    assert "1 files: 1 succeeded" in forced.stdout
    indexed = re.search(r"; (\d+) chunks indexed", forced.stdout)
    assert indexed, forced.stdout
    chunks = int(indexed.group(1))
    assert chunks > 1  # re-split with the smaller chunk size


def test_parent_child_from_kb_create_and_per_ingest(cli: Cli, tmp_path: Path) -> None:
    kb = unique("parents")
    ok(cli("kb", "create", kb, "--parent-child", "--parent-chunk-size", "800"))
    (tmp_path / "leave.txt").write_text(LEAVE, encoding="utf-8")
    (tmp_path / "expenses.txt").write_text(EXPENSES, encoding="utf-8")
    ok(cli("ingest", str(tmp_path / "leave.txt"), "--kb", kb, "--chunk-size", "60", "--chunk-overlap", "0"))
    ok(cli("ingest", str(tmp_path / "expenses.txt"), "--kb", kb, "--no-parent-child"))
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    with httpx.Client(base_url=cli.url, headers=headers, timeout=30) as http:
        record = http.get(f"/v1/knowledge_bases/{kb}").json()
        assert (record["parent_child"], record["parent_chunk_size"]) == (True, 800)
        jobs = {job["file_name"]: job for job in http.get(f"/v1/knowledge_bases/{kb}/jobs").json()["data"]}
        assert jobs["leave.txt"]["parent_chunk_size"] == 800
        assert jobs["expenses.txt"]["parent_chunk_size"] == 0
        hits = http.post(f"/v1/knowledge_bases/{kb}/search", json={"query": "annual leave portal"}).json()
        leave = [hit for hit in hits["data"] if hit["file_name"] == "leave.txt"]
        assert len(leave) > 1 and all(hit["parent"]["text"] == LEAVE.strip() for hit in leave)


def test_ingest_exits_non_zero_and_prints_the_error_of_a_failed_file(cli: Cli, tmp_path: Path) -> None:
    kb = unique("broken")
    ok(cli("kb", "create", kb))
    (tmp_path / "good.txt").write_text(LEAVE, encoding="utf-8")
    (tmp_path / "broken.pdf").write_bytes(b"%PDF-1.4 this is not a pdf at all")
    result = cli("ingest", str(tmp_path / "good.txt"), str(tmp_path / "broken.pdf"), "--kb", kb)
    assert result.exit_code == EXIT_FAILED, result.output
    assert "1 failed, 1 succeeded" in result.stdout
    failure = next(line for line in result.stderr.splitlines() if "broken.pdf" in line)
    assert "failed" in failure and "PDF" in failure, result.stderr
    no_traceback(result)


def test_ingest_into_a_missing_knowledge_base_uploads_nothing(cli: Cli, tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text(LEAVE, encoding="utf-8")
    kb = unique("absent")
    result = cli("ingest", str(tmp_path), "--kb", kb)
    assert result.exit_code == EXIT_NOT_FOUND
    assert kb in result.stderr
    no_traceback(result)


EVENTS_ROUTE = r"/v1/jobs/\{[^}]+\}/events"
JOB_ROUTE = r"/v1/jobs/\{[^}]+\}"


def _metric(stack: BackgroundStack, route_pattern: str, status: str) -> float:
    """The gateway's request counter for GET on routes matching ``route_pattern``."""
    text = httpx.get(f"{stack.url}/metrics", timeout=10).text
    line = rf'^zhiku_http_requests_total\{{method="GET",route="{route_pattern}",status="{status}"\}} (\S+)$'
    return sum(float(value) for value in re.findall(line, text, re.MULTILINE))


def test_ingest_follows_the_job_event_stream(cli: Cli, stack: BackgroundStack, tmp_path: Path) -> None:
    """Progress comes from ``GET /v1/jobs/{id}/events``, not polling, when the gateway has it."""
    kb = unique("events")
    ok(cli("kb", "create", kb))
    (tmp_path / "leave.txt").write_text(LEAVE, encoding="utf-8")
    before = _metric(stack, EVENTS_ROUTE, "200")
    polls = _metric(stack, JOB_ROUTE, "200")
    ok(cli("ingest", str(tmp_path), "--kb", kb))
    # the gateway counts a request when its response ends, which may trail the client a little
    deadline = time.monotonic() + 10
    while _metric(stack, EVENTS_ROUTE, "200") < before + 1 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _metric(stack, EVENTS_ROUTE, "200") == before + 1
    assert _metric(stack, JOB_ROUTE, "200") == polls  # no polling needed


def test_search_prints_hits_best_first_with_scores(cli: Cli, handbook: Ingested) -> None:
    result = ok(cli("search", "how do I request annual leave", "--kb", handbook.kb, "--top-k", "2"))
    rows = [line for line in result.stdout.splitlines() if re.match(r"│\s*\d+\s*│", line)]
    assert len(rows) == 2, result.stdout
    assert "leave.txt" in rows[0]
    scores = [float(re.findall(r"│\s*([01]\.\d{3})\s*│", row)[0]) for row in rows]
    assert scores == sorted(scores, reverse=True) and 0 <= scores[-1] <= scores[0] <= 1
    # sparse (BM25) scores are 0 for files sharing no word: the threshold must drop them
    sparse = ok(
        cli("search", "annual leave", "--kb", handbook.kb, "--mode", "sparse", "--score-threshold", "0.01")
    )
    assert "leave.txt" in sparse.stdout and "expenses.md" not in sparse.stdout
    nothing = ok(
        cli("search", "annual leave", "--kb", handbook.kb, "--mode", "dense", "--score-threshold", "1")
    )
    assert "No hits." in nothing.stdout


def test_search_of_a_missing_knowledge_base_is_a_clear_404(cli: Cli) -> None:
    result = cli("search", "anything", "--kb", "no_such_kb")
    assert result.exit_code == EXIT_NOT_FOUND
    assert "no_such_kb" in result.stderr
    no_traceback(result)


def test_ask_streams_the_answer_and_numbers_its_sources(cli: Cli, handbook: Ingested) -> None:
    result = ok(cli("ask", "How do I request annual leave?", "--kb", handbook.kb, "--top-k", "2"))
    answer, _, sources = result.stdout.partition("Sources")
    assert "HR portal" in answer
    first = next(line for line in sources.splitlines() if line.startswith("[1]"))
    assert "leave.txt" in first
    assert f"/v1/knowledge_bases/{handbook.kb}/files/leave.txt/content" in first
    assert "[2] expenses.md" in sources


def test_ask_continues_a_stored_conversation(cli: Cli, handbook: Ingested, stack: BackgroundStack) -> None:
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    created = httpx.post(f"{stack.url}/v1/conversations", json={"title": "cli"}, headers=headers)
    assert created.status_code == 201, created.text
    conversation = created.json()["id"]
    result = ok(
        cli("ask", "How are expenses reimbursed?", "--kb", handbook.kb, "--conversation", conversation)
    )
    assert f"conversation {conversation}" in result.stdout
    stored = httpx.get(f"{stack.url}/v1/conversations/{conversation}", headers=headers).json()["messages"]
    assert [m["role"] for m in stored] == ["user", "assistant"]
    assert stored[0]["content"] == "How are expenses reimbursed?"
    assert any(c["file_name"] == "expenses.md" for c in stored[1]["citations"])


def test_ask_about_uploaded_files(cli: Cli, stack: BackgroundStack) -> None:
    upload = httpx.post(
        f"{stack.url}/v1/file_chats",
        files=[
            ("files", ("parking.txt", b"Visitors park in lot C next to the north entrance.", "text/plain"))
        ],
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
        timeout=120,
    )
    assert upload.status_code == 201, upload.text
    result = ok(cli("ask", "Where do visitors park?", "--file-chat", upload.json()["id"]))
    answer, _, sources = result.stdout.partition("Sources")
    assert "lot C" in answer
    assert "[1] parking.txt" in sources


def test_ask_without_a_knowledge_base_is_plain_chat(cli: Cli) -> None:
    result = ok(cli("ask", "hello"))
    assert result.stdout.strip()
    assert "Sources" not in result.stdout


def test_jobs_show_one_job(cli: Cli, stack: BackgroundStack) -> None:
    kb = unique("jobshow")
    ok(cli("kb", "create", kb))
    upload = httpx.post(
        f"{stack.url}/v1/knowledge_bases/{kb}/files",
        files=[("files", ("note.txt", LEAVE.encode(), "text/plain"))],
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
    )
    job_id = upload.json()["jobs"][0]["id"]
    watched = ok(cli("jobs", "show", job_id, "--watch"))
    row = next(line for line in watched.stdout.splitlines() if job_id in line and "│" in line)
    assert "note.txt" in row and "succeeded" in row and "100%" in row
    again = ok(cli("jobs", "show", job_id))
    assert "succeeded" in again.stdout
    absent = str(uuid.uuid4())
    missing = cli("jobs", "show", absent)
    assert missing.exit_code == EXIT_NOT_FOUND
    assert absent in missing.stderr
    no_traceback(missing)


def test_jobs_cancel(cli: Cli, stack: BackgroundStack) -> None:
    kb = unique("cancel")
    ok(cli("kb", "create", kb))
    upload = httpx.post(
        f"{stack.url}/v1/knowledge_bases/{kb}/files",
        files=[("files", ("note.txt", LEAVE.encode(), "text/plain"))],
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
    )
    job_id = upload.json()["jobs"][0]["id"]
    cancelled = ok(cli("jobs", "cancel", job_id))
    row = next(line for line in cancelled.stdout.splitlines() if job_id in line and "│" in line)
    # a job that finished before the cancel arrived is returned as it is
    assert "cancelled" in row or "succeeded" in row, row
    final = ok(cli("jobs", "show", job_id)).stdout
    assert ("cancelled" in row) == ("cancelled" in final)
    assert cli("jobs", "cancel", str(uuid.uuid4())).exit_code == EXIT_NOT_FOUND


def test_jobs_lists_a_knowledge_base_newest_first(cli: Cli, handbook: Ingested) -> None:
    result = ok(cli("jobs", "--kb", handbook.kb))
    rows = [line for line in result.stdout.splitlines() if "│" in line and "succeeded" in line]
    names = [name for row in rows for name in ("leave.txt", "expenses.md") if name in row]
    # ingest uploads in path order (finance/expenses.md first), so leave.txt is the newest
    assert names == ["leave.txt", "expenses.md"], result.stdout
    bare = cli("jobs")
    assert bare.exit_code == 2 and "--kb" in bare.stderr


def test_keys_create_list_use_and_revoke(cli: Cli, handbook: Ingested) -> None:
    name = unique("reader")
    created = ok(cli("keys", "create", name, "--kb", handbook.kb, "--rate-limit", "100"))
    plaintext = created.stdout.strip().splitlines()[-1].strip()
    assert len(plaintext) >= 16, created.stdout
    listed = ok(cli("keys", "list")).stdout
    row = next(line for line in listed.splitlines() if name in line)
    key_id = row.split("│")[1].strip()
    assert plaintext not in listed
    assert handbook.kb in row and "100" in row
    assert "leave.txt" in ok(cli("search", "annual leave", "--kb", handbook.kb, api_key=plaintext)).stdout
    other = unique("other")
    ok(cli("kb", "create", other))
    outside = cli("search", "annual leave", "--kb", other, api_key=plaintext)
    # Another knowledge base reads as missing, exactly like one that does not exist.
    assert outside.exit_code == EXIT_NOT_FOUND and "does not exist" in outside.stderr, outside.output
    not_admin = cli("keys", "list", api_key=plaintext)
    assert not_admin.exit_code == EXIT_AUTH, not_admin.output
    ok(cli("keys", "revoke", key_id))
    refused = cli("kb", "list", api_key=plaintext)
    assert refused.exit_code == EXIT_AUTH
    assert "refused the API key" in refused.stderr


def test_missing_or_wrong_api_key_is_exit_4_with_a_hint(stack: BackgroundStack) -> None:
    anonymous = Cli(stack.url, None)("kb", "list")
    assert anonymous.exit_code == EXIT_AUTH
    assert "needs an API key" in anonymous.stderr and "--api-key" in anonymous.stderr
    no_traceback(anonymous)
    wrong = Cli(stack.url, "not-a-key")("kb", "list")
    assert wrong.exit_code == EXIT_AUTH
    assert "refused the API key" in wrong.stderr


def test_gateway_down_is_exit_3_without_traceback() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    for args in (("kb", "list"), ("ask", "hi", "--kb", "x"), ("search", "q", "--kb", "x")):
        result = Cli(url, None)(*args)
        assert result.exit_code == EXIT_UNREACHABLE, result.output
        assert f"cannot reach the gateway at {url}" in result.stderr
        no_traceback(result)
