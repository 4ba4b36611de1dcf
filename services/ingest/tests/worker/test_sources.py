"""Sources synced by a REAL Celery worker: a directory, an S3 bucket (moto's server speaking
the S3 protocol on loopback) and a web site (a local HTTP server serving real HTML files and a
robots.txt). Each test adds, changes and deletes at the source, syncs, and checks the report
and the knowledge base: exact chunk counts per file, and as many points in the index.
"""

from __future__ import annotations

import http.server
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import boto3
import grpc
import pytest
from cryptography.fernet import Fernet
from moto.server import ThreadedMotoServer
from sqlalchemy import select

from services.common.errors import FailedPrecondition
from services.ingest.api.server import build_spec
from services.ingest.sources.items import SourceUnavailable
from services.ingest.sources.web import WebConnector
from services.ingest.store.catalog import Catalog
from services.ingest.store.secrets import SecretBox
from services.ingest.store.tables import SourceRow
from services.ingest.tests.conftest import Dependencies, background_service, free_port, ingest_settings
from services.ingest.tests.worker.test_worker import REDIS_URL, TERMINAL, Stack, _drop_tables, celery_worker
from zhiku.v1 import ingest_pb2, ingest_pb2_grpc, retrieve_pb2, retrieve_pb2_grpc

TIMEOUT = 60
SYNC_TIMEOUT_S = 120
S3_KEY_ID, S3_SECRET = "AKIASOURCESTEST", "s3-secret-never-shown-0123456789"


def paragraphs(topic: str, count: int) -> str:
    """``count`` paragraphs of 168 characters: one chunk each with the default split (250/50)."""
    return "\n\n".join(f"Paragraph {i} about the {topic} who logs ships. " * 3 for i in range(count))


@dataclass
class SourceStack:
    stack: Stack
    root: Path


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def sources(
    request: pytest.FixtureRequest, dependencies: Dependencies, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SourceStack]:
    """The embedded shape (SQLite catalog and broker) and the deployed one (PostgreSQL, Redis)."""
    data_dir = tmp_path_factory.mktemp(f"ingest-sources-{request.param}")
    overrides: dict[str, Any] = {}
    if request.param == "postgresql":
        overrides = {"redis_url": REDIS_URL, "catalog_url": request.getfixturevalue("postgres_url")}
        _drop_tables(overrides["catalog_url"])
    root = data_dir / "mounted"
    root.mkdir()
    settings = ingest_settings(
        data_dir,
        embed_addr=dependencies.embed_address,
        retrieve_addr=dependencies.retrieve_address,
        sources_root=root,
        sources_key=Fernet.generate_key().decode(),
        sources_sweep_s=0.5,
        sources_allow_private_networks=True,  # the test servers listen on loopback
        **overrides,
    )
    metrics_port = free_port()
    log_path = data_dir / "worker.log"
    with (
        background_service(build_spec(settings), settings) as api,
        celery_worker(settings, metrics_port, log_path),
        grpc.insecure_channel(api.address) as ingest_channel,
        grpc.insecure_channel(dependencies.retrieve_address) as retrieve_channel,
    ):
        stack = Stack(
            ingest_pb2_grpc.IngestServiceStub(ingest_channel),
            retrieve_pb2_grpc.RetrieveServiceStub(retrieve_channel),
            None,  # type: ignore[arg-type]  # embed is not called here
            settings,
            dependencies.embed_model,
            metrics_port,
            log_path,
        )
        yield SourceStack(stack, root)
        print(f"--- worker log ---\n{log_path.read_text(errors='replace')[-6000:]}")


# -- helpers ------------------------------------------------------------------------------


def new_kb(stack: Stack) -> str:
    name = f"src_{uuid.uuid4().hex[:8]}"
    stack.ingest.CreateKnowledgeBase(ingest_pb2.CreateKnowledgeBaseRequest(name=name), timeout=TIMEOUT)
    return name


def create(stack: Stack, kb: str, **fields: Any) -> ingest_pb2.Source:
    request = ingest_pb2.CreateSourceRequest(knowledge_base=kb, source=ingest_pb2.Source(**fields))
    return stack.ingest.CreateSource(request, timeout=TIMEOUT)


def sync(stack: Stack, kb: str, name: str) -> ingest_pb2.SyncReport:
    """Sync the source, wait for the report, then for the ingest jobs it queued."""
    queued = stack.ingest.SyncSource(
        ingest_pb2.SyncSourceRequest(knowledge_base=kb, name=name), timeout=TIMEOUT
    )
    assert queued.state == "queued" and queued.trigger == "manual"
    return wait_report(stack, kb, name, queued.id)


def wait_report(stack: Stack, kb: str, name: str, run_id: str = "") -> ingest_pb2.SyncReport:
    deadline = time.monotonic() + SYNC_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            report = stack.ingest.GetSyncReport(
                ingest_pb2.GetSyncReportRequest(knowledge_base=kb, name=name, id=run_id), timeout=TIMEOUT
            )
        except grpc.RpcError as error:
            assert error.code() == grpc.StatusCode.NOT_FOUND
        else:
            if report.state in ("succeeded", "failed"):
                wait_jobs(stack, list(report.job_ids))
                return report
        time.sleep(0.2)
    pytest.fail(f"sync of {kb}/{name} not finished:\n{stack.log_tail()}")


def wait_jobs(stack: Stack, job_ids: list[str]) -> None:
    deadline = time.monotonic() + SYNC_TIMEOUT_S
    pending = set(job_ids)
    while pending and time.monotonic() < deadline:
        for job_id in list(pending):
            job = stack.ingest.GetJob(ingest_pb2.GetJobRequest(id=job_id), timeout=TIMEOUT)
            if job.state in TERMINAL:
                assert job.state == ingest_pb2.JOB_STATE_SUCCEEDED, job.error
                pending.discard(job_id)
        time.sleep(0.2)
    assert not pending, f"jobs not finished: {pending}\n{stack.log_tail()}"


def chunks_by_file(stack: Stack, kb: str) -> dict[str, int]:
    files = stack.ingest.ListFiles(ingest_pb2.ListFilesRequest(knowledge_base=kb), timeout=TIMEOUT).files
    assert all(f.state == ingest_pb2.JOB_STATE_SUCCEEDED for f in files), files
    counted = {f.name: f.chunks for f in files}
    points = stack.retrieve.Stats(retrieve_pb2.StatsRequest(collection=kb), timeout=TIMEOUT).points
    assert points == sum(counted.values()), "the index holds exactly the chunks the catalog counts"
    return counted


def failed(report: ingest_pb2.SyncReport) -> dict[str, str]:
    return {failure.item: failure.reason for failure in report.failed}


# -- directory ----------------------------------------------------------------------------


def test_directory_source_adds_updates_removes_and_leaves_uploads_alone(sources: SourceStack) -> None:
    stack, folder = sources.stack, sources.root / "handbook"
    (folder / "ops").mkdir(parents=True)
    (folder / "alpha.md").write_text(paragraphs("lighthouse keeper", 1))
    (folder / "ops" / "beta.txt").write_text(paragraphs("harbour master", 2))
    (folder / ".hidden").write_text("editor swap file")
    kb = new_kb(stack)
    upload = stack.ingest.SubmitFile(
        ingest_pb2.SubmitFileRequest(
            knowledge_base=kb, file_name="alpha_upload.md", content=b"uploaded by hand"
        ),
        timeout=TIMEOUT,
    )
    wait_jobs(stack, [upload.id])
    source = create(stack, kb, name="handbook", kind="directory", path="handbook")
    assert source.path == "handbook" and not source.credentials_set

    first = sync(stack, kb, "handbook")
    assert first.state == "succeeded", first.error
    assert sorted(first.added) == ["alpha.md", "ops__beta.txt"]
    assert list(first.updated) == list(first.removed) == [] and not first.failed
    assert chunks_by_file(stack, kb) == {"alpha.md": 1, "ops__beta.txt": 2, "alpha_upload.md": 1}

    (folder / "alpha.md").write_text(paragraphs("lighthouse keeper", 3))  # changed: 1 -> 3 chunks
    (folder / "ops" / "beta.txt").unlink()
    (folder / "gamma.md").write_text(paragraphs("ferry pilot", 1))
    second = sync(stack, kb, "handbook")
    assert (list(second.added), list(second.updated), list(second.removed)) == (
        ["gamma.md"],
        ["alpha.md"],
        ["ops__beta.txt"],
    )
    assert chunks_by_file(stack, kb) == {"alpha.md": 3, "gamma.md": 1, "alpha_upload.md": 1}

    third = sync(stack, kb, "handbook")  # nothing changed: nothing queued
    assert third.unchanged == 2 and not third.added and not third.updated and not third.removed
    assert not third.job_ids
    listed = stack.ingest.ListSources(ingest_pb2.ListSourcesRequest(knowledge_base=kb), timeout=TIMEOUT)
    assert [s.last_sync.id for s in listed.sources] == [third.id]


def test_directory_source_name_taken_by_an_upload_is_a_failure_not_an_overwrite(sources: SourceStack) -> None:
    stack, folder = sources.stack, sources.root / "clash"
    folder.mkdir()
    (folder / "notes.md").write_text(paragraphs("cartographer", 2))
    kb = new_kb(stack)
    upload = stack.ingest.SubmitFile(
        ingest_pb2.SubmitFileRequest(knowledge_base=kb, file_name="notes.md", content=b"my own notes"),
        timeout=TIMEOUT,
    )
    wait_jobs(stack, [upload.id])
    create(stack, kb, name="clash", kind="directory", path="clash")
    report = sync(stack, kb, "clash")
    assert report.state == "succeeded" and not report.added
    assert "already exists in the knowledge base" in failed(report)["notes.md"]
    assert chunks_by_file(stack, kb) == {"notes.md": 1}


@pytest.mark.parametrize("path", ["../outside", "/etc", "handbook/../../outside", "missing-folder"])
def test_directory_outside_the_root_or_missing_is_refused(sources: SourceStack, path: str) -> None:
    (sources.root.parent / "outside").mkdir(exist_ok=True)
    kb = new_kb(sources.stack)
    with pytest.raises(grpc.RpcError) as refused:
        create(sources.stack, kb, name="escape", kind="directory", path=path)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "sources root" in (refused.value.details() or "")


def test_scheduled_sync_runs_on_its_interval(sources: SourceStack) -> None:
    stack, folder = sources.stack, sources.root / "scheduled"
    folder.mkdir()
    (folder / "tide.md").write_text(paragraphs("tide table", 2))
    kb = new_kb(stack)
    source = create(stack, kb, name="tides", kind="directory", path="scheduled", interval_s=5)
    assert source.next_sync_at > time.time()
    report = wait_report(stack, kb, "tides")
    assert report.trigger == "schedule" and list(report.added) == ["tide.md"]
    assert chunks_by_file(stack, kb) == {"tide.md": 2}


# -- S3 -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def test_s3_source_syncs_its_prefix_and_never_shows_its_keys(sources: SourceStack, s3_endpoint: str) -> None:
    stack = sources.stack
    s3 = boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        region_name="us-east-1",
        aws_access_key_id=S3_KEY_ID,
        aws_secret_access_key=S3_SECRET,
    )
    bucket = f"docs-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="kb/guide/intro.md", Body=paragraphs("archivist", 2).encode())
    s3.put_object(Bucket=bucket, Key="kb/faq.txt", Body=paragraphs("librarian", 1).encode())
    s3.put_object(Bucket=bucket, Key="other/skip.txt", Body=b"outside the prefix")
    kb = new_kb(stack)
    source = create(
        stack,
        kb,
        name="bucket",
        kind="s3",
        bucket=bucket,
        prefix="kb/",
        endpoint_url=s3_endpoint,
        access_key_id=S3_KEY_ID,
        secret_access_key=S3_SECRET,
    )
    assert source.credentials_set and source.access_key_id == source.secret_access_key == ""
    listed = stack.ingest.ListSources(ingest_pb2.ListSourcesRequest(knowledge_base=kb), timeout=TIMEOUT)
    assert S3_SECRET.encode() not in listed.SerializeToString()
    assert S3_KEY_ID.encode() not in listed.SerializeToString()
    catalog = Catalog(stack.settings.catalog_url)
    with catalog.database.session(write=False) as session:
        sealed = session.scalar(select(SourceRow.secret).where(SourceRow.name == "bucket"))
    catalog.dispose()
    assert sealed and S3_SECRET not in sealed and S3_KEY_ID not in sealed

    first = sync(stack, kb, "bucket")
    assert first.state == "succeeded", first.error
    assert sorted(first.added) == ["faq.txt", "guide__intro.md"]
    assert chunks_by_file(stack, kb) == {"faq.txt": 1, "guide__intro.md": 2}

    s3.put_object(Bucket=bucket, Key="kb/faq.txt", Body=paragraphs("librarian", 3).encode())
    s3.delete_object(Bucket=bucket, Key="kb/guide/intro.md")
    s3.put_object(Bucket=bucket, Key="kb/new.md", Body=paragraphs("bookbinder", 1).encode())
    second = sync(stack, kb, "bucket")
    assert (list(second.added), list(second.updated), list(second.removed)) == (
        ["new.md"],
        ["faq.txt"],
        ["guide__intro.md"],
    )
    assert chunks_by_file(stack, kb) == {"faq.txt": 3, "new.md": 1}

    # The same bucket behind an endpoint nothing listens on: the sync fails, saying why,
    # and the files synced so far stay as they are.
    create(
        stack,
        kb,
        name="down",
        kind="s3",
        bucket=bucket,
        prefix="kb/",
        endpoint_url=f"http://127.0.0.1:{free_port()}",
    )
    down = sync(stack, kb, "down")
    assert down.state == "failed" and "cannot list s3://" in down.error
    assert not down.added and not down.removed
    assert chunks_by_file(stack, kb) == {"faq.txt": 3, "new.md": 1}


def test_s3_credentials_are_not_stored_without_the_encryption_key() -> None:
    with pytest.raises(FailedPrecondition, match="ZHIKU_INGEST_SOURCES_KEY"):
        SecretBox("").seal({"access_key_id": "a", "secret_access_key": "b"})
    assert SecretBox("").seal({"access_key_id": "", "secret_access_key": ""}) == ""


# -- web site -----------------------------------------------------------------------------


PAGE = (
    "<!doctype html><html><head><title>{title}</title></head>"
    "<body><h1>{title}</h1><p>{text}</p>{links}</body></html>"
)


def write_page(site: Path, path: str, title: str, text: str, links: list[str]) -> None:
    anchors = "".join(f'<a href="{href}">{href}</a> ' for href in links)
    target = site / path
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(PAGE.format(title=title, text=text, links=f"<p>{anchors}</p>"))


@pytest.fixture
def site(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    root = tmp_path / "site"
    root.mkdir()
    (root / "robots.txt").write_text("User-agent: *\nDisallow: /private/\n")
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def test_web_source_crawls_within_depth_domain_and_robots(
    sources: SourceStack, site: tuple[str, Path]
) -> None:
    stack, (base, root) = sources.stack, site
    links = ["guide/stars.html", "/moons.html", "private/secret.html", "http://example.invalid/away.html"]
    write_page(root, "index.html", "Home", "Welcome to the observatory.", links)
    write_page(root, "guide/stars.html", "Stars", "Stars are catalogued by brightness.", ["deep/far.html"])
    write_page(root, "moons.html", "Moons", "Moons are listed by planet.", [])
    write_page(root, "private/secret.html", "Secret", "Robots may not read this.", [])
    write_page(root, "guide/deep/far.html", "Far", "Two links away from the start.", [])
    kb = new_kb(stack)
    create(stack, kb, name="site", kind="web", start_url=f"{base}/index.html", max_depth=1)

    first = sync(stack, kb, "site")
    assert first.state == "succeeded", first.error
    assert sorted(first.added) == ["guide__stars.html", "index.html", "moons.html"]
    assert chunks_by_file(stack, kb) == {"guide__stars.html": 1, "index.html": 1, "moons.html": 1}

    write_page(root, "index.html", "Home", "Welcome to the observatory.", ["guide/stars.html", "comets.html"])
    write_page(root, "comets.html", "Comets", "Comets return on long orbits.", [])
    write_page(root, "guide/stars.html", "Stars", "Stars are now sorted by distance.", [])
    (root / "moons.html").unlink()
    second = sync(stack, kb, "site")
    assert sorted(second.added) == ["comets.html"]
    assert sorted(second.updated) == ["guide__stars.html", "index.html"]
    assert list(second.removed) == ["moons.html"]
    assert chunks_by_file(stack, kb) == {"comets.html": 1, "guide__stars.html": 1, "index.html": 1}

    create(stack, kb, name="gone", kind="web", start_url=f"{base}/missing.html")
    gone = sync(stack, kb, "gone")
    assert gone.state == "failed" and "HTTP 404" in gone.error
    assert chunks_by_file(stack, kb) == {"comets.html": 1, "guide__stars.html": 1, "index.html": 1}


def test_web_source_from_a_sitemap(sources: SourceStack, site: tuple[str, Path]) -> None:
    stack, (base, root) = sources.stack, site
    write_page(root, "a.html", "A", "The first mapped page.", [])
    write_page(root, "private/b.html", "B", "Forbidden by robots.txt.", [])
    (root / "sitemap.xml").write_text(
        '<?xml version="1.0"?><urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">'
        f"<url><loc>{base}/a.html</loc></url><url><loc>{base}/private/b.html</loc></url>"
        f"<url><loc>{base}/nope.html</loc></url></urlset>"
    )
    kb = new_kb(stack)
    create(stack, kb, name="map", kind="web", sitemap_url=f"{base}/sitemap.xml")
    report = sync(stack, kb, "map")
    assert list(report.added) == ["a.html"]
    assert "HTTP 404" in failed(report)[f"{base}/nope.html"]
    assert chunks_by_file(stack, kb) == {"a.html": 1}
    shutil.rmtree(root / "private")


def test_web_source_refuses_private_addresses_unless_allowed(site: tuple[str, Path]) -> None:
    base, root = site
    write_page(root, "index.html", "Home", "An intranet page.", [])
    refused = WebConnector(f"{base}/index.html", "", 1, 10, 100_000, 10, allow_private=False)
    with pytest.raises(SourceUnavailable, match=r"127\.0\.0\.1, a private, loopback or reserved address"):
        refused.list_items()
    allowed = WebConnector(f"{base}/index.html", "", 1, 10, 100_000, 10, allow_private=True)
    assert [item.file_name for item in allowed.list_items()] == ["index.html"]
