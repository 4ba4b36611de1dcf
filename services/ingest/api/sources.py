"""The IngestService's source methods: create, list, delete and sync sources of a knowledge base.

Settings are validated here, before anything is stored (a directory outside the sources root,
a URL that is not http(s), limits out of range: INVALID_ARGUMENT with the reason); S3 keys are
sealed with the configured key and never put in a reply. A sync is queued as a Celery task
for the worker (``services.ingest.worker.sync``); scheduled ones are queued by
:func:`queue_due_syncs`, a loop of the API process.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from typing import Any
from urllib.parse import urlsplit

from celery import Celery

from services.common.errors import DependencyUnavailable, InvalidArgument, kb_not_found
from services.common.names import check_kb_name
from services.ingest.broker import enqueue_sync
from services.ingest.config import IngestSettings
from services.ingest.sources.connectors import KINDS
from services.ingest.sources.directory import confined_path
from services.ingest.store.catalog import Catalog
from services.ingest.store.secrets import SecretBox
from services.ingest.store.sources import SourceRecord, SyncReportRecord
from zhiku.v1 import ingest_pb2

log = logging.getLogger("zhiku.ingest.sources")

_SOURCE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
MIN_INTERVAL_S, MAX_INTERVAL_S = 5, 366 * 86400


def check_source_name(name: str) -> str:
    if not _SOURCE_NAME.fullmatch(name) or ".." in name:
        raise InvalidArgument(
            f"source name {name!r} must be 1-64 letters, digits, '_', '-' or '.', "
            "starting with a letter or digit"
        )
    return name


def _http_url(value: str, what: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise InvalidArgument(f"{what} must be an http(s) URL, got {value!r}")
    return value


def _in_range(value: int, low: int, high: int, what: str) -> int:
    if not low <= value <= high:
        raise InvalidArgument(f"{what} must be between {low} and {high}, got {value}")
    return value


def source_settings(
    spec: ingest_pb2.Source, settings: IngestSettings
) -> tuple[dict[str, Any], dict[str, str]]:
    """The source's stored settings and its secrets, validated; InvalidArgument says what is wrong."""
    if spec.kind == "directory":
        path = confined_path(settings.sources_root, spec.path)
        if not path.is_dir():
            raise InvalidArgument(f"directory {spec.path!r} does not exist under the sources root")
        return {"path": spec.path}, {}
    if spec.kind == "s3":
        if not spec.bucket:
            raise InvalidArgument("an s3 source needs a bucket")
        if spec.endpoint_url:
            _http_url(spec.endpoint_url, "endpoint_url")
        if bool(spec.access_key_id) != bool(spec.secret_access_key):
            raise InvalidArgument("give both access_key_id and secret_access_key, or neither")
        config: dict[str, Any] = {
            "bucket": spec.bucket,
            "prefix": spec.prefix,
            "endpoint_url": spec.endpoint_url,
            "region": spec.region,
        }
        secret = {"access_key_id": spec.access_key_id, "secret_access_key": spec.secret_access_key}
        return config, secret
    if spec.kind == "web":
        if bool(spec.start_url) == bool(spec.sitemap_url):
            raise InvalidArgument("a web source needs exactly one of start_url and sitemap_url")
        config = {}
        if spec.start_url:
            config["start_url"] = _http_url(spec.start_url, "start_url")
        else:
            config["sitemap_url"] = _http_url(spec.sitemap_url, "sitemap_url")
        config["max_depth"] = _in_range(spec.max_depth or settings.web_max_depth, 0, 10, "max_depth")
        config["max_pages"] = _in_range(spec.max_pages or settings.web_max_pages, 1, 10_000, "max_pages")
        config["max_page_bytes"] = _in_range(
            spec.max_page_bytes or settings.web_max_page_bytes,
            1024,
            settings.max_file_bytes,
            "max_page_bytes",
        )
        return config, {}
    raise InvalidArgument(f"source kind must be one of {', '.join(KINDS)}, got {spec.kind!r}")


def source_pb(source: SourceRecord, last: SyncReportRecord | None) -> ingest_pb2.Source:
    """The reply form of a source: its settings, never its secrets (only whether they are set)."""
    config = source.config
    return ingest_pb2.Source(
        name=source.name,
        knowledge_base=source.knowledge_base,
        kind=source.kind,
        path=config.get("path", ""),
        bucket=config.get("bucket", ""),
        prefix=config.get("prefix", ""),
        endpoint_url=config.get("endpoint_url", ""),
        region=config.get("region", ""),
        credentials_set=bool(source.secret),
        start_url=config.get("start_url", ""),
        sitemap_url=config.get("sitemap_url", ""),
        max_depth=int(config.get("max_depth", 0)),
        max_pages=int(config.get("max_pages", 0)),
        max_page_bytes=int(config.get("max_page_bytes", 0)),
        interval_s=source.interval_s,
        created_at=source.created_at,
        next_sync_at=source.next_sync_at,
        last_sync=last.to_pb() if last is not None else None,
    )


class SourceMethods:
    """Mixed into the IngestServicer, which provides these attributes."""

    settings: IngestSettings
    catalog: Catalog
    celery: Celery

    async def CreateSource(self, request: ingest_pb2.CreateSourceRequest, context: Any) -> ingest_pb2.Source:
        kb = check_kb_name(request.knowledge_base)
        # An unknown knowledge base answers NOT_FOUND whatever the settings, like a hidden one.
        if not await asyncio.to_thread(self.catalog.knowledge_bases.exists, kb):
            raise kb_not_found(kb)
        spec = request.source
        name = check_source_name(spec.name)
        interval = spec.interval_s
        if interval:
            _in_range(interval, MIN_INTERVAL_S, MAX_INTERVAL_S, "interval_s")
        config, secret = source_settings(spec, self.settings)
        sealed = SecretBox(self.settings.sources_key).seal(secret)

        source = await asyncio.to_thread(
            self.catalog.sources.create, kb, name, spec.kind, config, sealed, interval
        )
        log.info("created %s source %s in %s", source.kind, name, kb)
        return source_pb(source, None)

    async def ListSources(
        self, request: ingest_pb2.ListSourcesRequest, context: Any
    ) -> ingest_pb2.ListSourcesResponse:
        kb = check_kb_name(request.knowledge_base)

        def listing() -> list[ingest_pb2.Source]:
            latest = self.catalog.sources.latest_runs(kb)
            return [source_pb(source, latest.get(source.name)) for source in self.catalog.sources.list(kb)]

        return ingest_pb2.ListSourcesResponse(sources=await asyncio.to_thread(listing))

    async def DeleteSource(
        self, request: ingest_pb2.DeleteSourceRequest, context: Any
    ) -> ingest_pb2.DeleteSourceResponse:
        kb = check_kb_name(request.knowledge_base)
        name = check_source_name(request.name)
        await asyncio.to_thread(self.catalog.sources.delete, kb, name)
        log.info("deleted source %s of %s (its files stay)", name, kb)
        return ingest_pb2.DeleteSourceResponse()

    async def SyncSource(self, request: ingest_pb2.SyncSourceRequest, context: Any) -> ingest_pb2.SyncReport:
        kb = check_kb_name(request.knowledge_base)
        name = check_source_name(request.name)
        run, new = await asyncio.to_thread(self.catalog.sources.request_sync, kb, name)
        if new:
            try:
                await asyncio.to_thread(enqueue_sync, self.celery, run.id)
            except Exception as error:
                run.state, run.error = "failed", f"could not enqueue the sync: {error}"
                await asyncio.to_thread(self.catalog.sources.finish_run, run)
                raise DependencyUnavailable(f"job queue unavailable: {error}") from error
        return run.to_pb()

    async def GetSyncReport(
        self, request: ingest_pb2.GetSyncReportRequest, context: Any
    ) -> ingest_pb2.SyncReport:
        kb = check_kb_name(request.knowledge_base)
        name = check_source_name(request.name)
        report = await asyncio.to_thread(self.catalog.sources.run, kb, name, request.id)
        return report.to_pb()


async def queue_due_syncs(catalog: Catalog, celery: Celery, every_s: float) -> None:
    """Queue the sync of every source whose interval has come; forever, every ``every_s``.

    The API process's loop rather than Celery beat: no extra process to deploy, and the claim
    is a conditional update in the catalog, so any number of API replicas queue each due
    sync once (beat must run exactly once per deployment).
    """
    while True:
        await asyncio.sleep(every_s)
        try:
            for run in await asyncio.to_thread(catalog.sources.claim_due, time.time()):
                await asyncio.to_thread(enqueue_sync, celery, run.id)
                log.info("queued scheduled sync %s of %s/%s", run.id, run.knowledge_base, run.source)
        except Exception as error:  # the schedule must outlive a database or broker hiccup
            log.warning("queueing scheduled syncs failed: %s", error)
