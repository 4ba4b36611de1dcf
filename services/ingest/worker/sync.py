"""One sync of a source: list it, then add, re-index and remove files of the knowledge base.

It reuses the upload path exactly: each new or changed item is written to the blob store and
submitted through ``JobLifecycle.submit_file`` (content hash compared there: identical bytes
are a no-op, anything else a queued ingest job), then published like an upload. Files the
source owns that are gone from it are deleted as ``DeleteFile`` does (vectors, catalog row,
blob). The source is listed in full first: one it cannot list fails the sync with the reason
and nothing in the knowledge base changes; an item it cannot read is reported and skipped
(an item that was indexed before keeps its old version).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable

import grpc

from services.common.errors import FailedPrecondition, InvalidArgument, NotFound, ZhikuError
from services.common.names import file_name_error
from services.ingest.sources.connectors import connector_for
from services.ingest.sources.items import ItemUnavailable, SourceItem, SourceUnavailable
from services.ingest.store.blobs import sha256_hex
from services.ingest.store.sources import SourceRecord, SyncReportRecord
from services.ingest.worker.pipeline import IngestPipeline
from zhiku.v1 import retrieve_pb2

log = logging.getLogger("zhiku.ingest.sync")


class SourceSync:
    def __init__(self, pipeline: IngestPipeline, enqueue: Callable[[str], None]) -> None:
        self.pipeline = pipeline
        self.settings = pipeline.settings
        self.catalog = pipeline.catalog
        self.sources = pipeline.catalog.sources
        self.enqueue = enqueue

    def run(self, run_id: str) -> SyncReportRecord | None:
        claimed = self.sources.begin_run(run_id)
        if claimed is None:
            log.info("sync %s is gone or taken; nothing to do", run_id)
            return None
        report, source = claimed
        try:
            items = connector_for(source, self.settings).list_items()
        except (SourceUnavailable, FailedPrecondition, InvalidArgument, ValueError, KeyError) as error:
            report.state, report.error = "failed", str(error)
            log.warning("sync %s of source %s failed: %s", run_id, source.name, error)
            self.sources.finish_run(report)
            return report
        self._apply(source, items, report)
        report.state = "succeeded"
        self.sources.finish_run(report)
        log.info(
            "sync %s of %s/%s: %d added, %d updated, %d removed, %d failed, %d unchanged",
            run_id, source.knowledge_base, source.name, len(report.added), len(report.updated),
            len(report.removed), len(report.failed), report.unchanged,
        )  # fmt: skip
        return report

    def _apply(self, source: SourceRecord, items: list[SourceItem], report: SyncReportRecord) -> None:
        owned = self.sources.items(source.id)
        listed: set[str] = set()
        for item in items:
            if item.file_name in listed:
                report.failed.append(
                    (item.item, f"another item of this source is also named {item.file_name!r}")
                )
                continue
            listed.add(item.file_name)
            try:
                self._one(source, item, item.file_name in owned, report)
            except (ItemUnavailable, ZhikuError) as error:
                report.failed.append((item.item, str(error)))
        for file_name in sorted(set(owned) - listed):
            try:
                self._remove(source, file_name)
                report.removed.append(file_name)
            except ZhikuError as error:
                report.failed.append((owned[file_name], f"could not remove {file_name}: {error}"))

    def _one(self, source: SourceRecord, item: SourceItem, owned: bool, report: SyncReportRecord) -> None:
        kb, name = source.knowledge_base, item.file_name
        error = file_name_error(name)
        if error:
            raise ItemUnavailable(error)
        existing = self.catalog.files.find(kb, name)
        if existing is not None and not owned:
            raise ItemUnavailable(
                f"{name!r} already exists in the knowledge base (an upload or another source)"
            )
        content = item.fetch()
        if not content:
            raise ItemUnavailable("empty")
        if len(content) > self.settings.max_file_bytes:
            raise ItemUnavailable(f"{len(content)} bytes; the file limit is {self.settings.max_file_bytes}")
        content_hash = sha256_hex(content)
        if existing is None or existing.content_hash != content_hash:
            self.pipeline.blobs.write(kb, name, content)
        self.sources.own(source, name, item.item)
        job = self.pipeline.lifecycle.submit_file(
            kb,
            name,
            len(content),
            content_hash,
            self.settings.chunk_size,
            min(self.settings.chunk_overlap, self.settings.chunk_size // 5),
            f"sync-{report.id}",
        )
        if job.unchanged:
            report.unchanged += 1
            return
        self.enqueue(job.id)
        report.job_ids.append(job.id)
        (report.updated if existing is not None else report.added).append(name)

    def _remove(self, source: SourceRecord, file_name: str) -> None:
        kb = source.knowledge_base
        # Every collection of the knowledge base: a migration's new one too.
        for collection in self.pipeline.migrations.collections(kb):
            request = retrieve_pb2.DeleteByFileRequest(collection=collection, file_name=file_name)
            try:
                self.pipeline.retrieve.DeleteByFile(request, timeout=self.settings.retrieve_timeout_s)
            except grpc.RpcError as error:
                if error.code() != grpc.StatusCode.NOT_FOUND:
                    raise FailedPrecondition(f"retrieve service: {error.details()}") from None
        with contextlib.suppress(NotFound):  # deleted by hand meanwhile: only ownership is left
            self.pipeline.lifecycle.delete_file(kb, file_name)
        self.pipeline.blobs.delete(kb, file_name)
        self.sources.disown(source.id, file_name)
