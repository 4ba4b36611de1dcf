"""The worker side of a migration job: re-embed every file into the shadow collection, switch.

Each file's live generation is rebuilt from its stored original (parsed and split with the
settings of the job that indexed it, so the chunks, their point ids and their count are the
same), embedded with the new model and upserted into the shadow; then the shadow keeps only
that generation of the file, and the catalog notes it (``Migrations.mark_copied``). A file
that changed meanwhile is copied again in the next round; uploads during the migration index
into both collections themselves. Once every file is in and no upload is in flight, the
catalog switches the knowledge base to the shadow and its model in one transaction, and
retires the old collection: the ingest API drops it after ``migration_drop_delay_s``
(searches that read the old record a moment before the switch still find it).

Progress is the share of files copied; a cancel is noticed at the next progress write, like
every job's (the ingest API has dropped the shadow already). A retried attempt resumes: files
already marked are not embedded again.
"""

from __future__ import annotations

import logging
import time

from services.common.errors import FailedPrecondition, InvalidArgument, NotFound
from services.ingest.jobs import GENERATION_KEY
from services.ingest.migration import NOTHING_TO_COPY, FileState, Target
from services.ingest.store.records import ACTIVE_STATES, JobState
from services.ingest.worker.pipeline import Abandoned, FileGone, IngestPipeline, _Run
from zhiku.v1 import embed_pb2

log = logging.getLogger("zhiku.ingest.migrator")

# How often a migration waiting for uploads in flight looks again.
WAIT_POLL_S = 0.5


class Migrator:
    def __init__(self, pipeline: IngestPipeline) -> None:
        self.pipeline = pipeline
        self.migrations = pipeline.migrations
        self.settings = pipeline.settings

    def run(self, run: _Run) -> JobState:
        job = run.job
        kb = job.knowledge_base
        target = next((t for t in self.migrations.targets(kb) if t.shadow), None)
        if target is None or target.model != job.embed_model:
            raise Abandoned(job.id)  # cancelled before it started
        info = self.pipeline.call(
            "embed",
            self.pipeline.embed.Info,
            embed_pb2.EmbedInfoRequest(model=target.model),
            self.settings.retrieve_timeout_s,
        )
        self.pipeline.ensure_collection(target.collection, info.dimension)
        log.info("migrating %s to %s into %s (job %s)", kb, target.model, target.collection, job.id)
        self._advance(run, JobState.EMBEDDING, 0.0)
        while True:
            files = self.migrations.files(kb)
            pending = [f for f in files if not f.shadow_generation and f.state not in ACTIVE_STATES]
            done = len(files) - len(pending)
            for file in pending:
                self._advance(run, JobState.EMBEDDING, 0.95 * done / max(len(files), 1))
                self._copy(run, target, file)
                done += 1
            self._advance(run, JobState.INDEXING, 0.95)
            switched = self.migrations.switch(kb, job.id, self.settings.migration_drop_delay_s)
            if isinstance(switched, tuple):
                old, new = switched
                log.info("knowledge base %s now searches %s with %s (%s retired)", kb, new, target.model, old)
                return JobState.SUCCEEDED
            if switched == "the migration was cancelled":
                raise Abandoned(job.id)
            log.debug("migration %s not ready to switch: %s", job.id, switched)
            time.sleep(WAIT_POLL_S)

    def _advance(self, run: _Run, stage: JobState, progress: float) -> None:
        """Write progress now (a migration's steps are few and long); Abandoned when cancelled."""
        if stage != run.reported_stage:
            active = self.pipeline.lifecycle.advance(run.job.id, stage, progress)
        else:
            active = self.pipeline.lifecycle.set_progress(run.job.id, progress)
        run.reported_stage, run.reported_progress = stage, progress
        if not active:
            raise Abandoned(run.job.id)

    def _copy(self, run: _Run, target: Target, file: FileState) -> None:
        """Bring the file's live generation into the shadow, or note that it has none."""
        kb = run.job.knowledge_base
        live = self.migrations.live_generation(kb, file)
        if live is None:
            # Never indexed, or its indexed version's original was replaced by an upload that
            # failed: it arrives empty (it says failed already; re-uploading it fixes it).
            self.migrations.mark_copied(kb, run.job.id, file, NOTHING_TO_COPY)
            return
        try:
            chunks = self.pipeline.prepare(live)
        except (NotFound, FailedPrecondition, InvalidArgument) as error:
            if self._unchanged(kb, file):
                raise FailedPrecondition(f"cannot re-embed {file.name}: {error}") from error
            # Replaced or deleted since it was listed (its original with it): next round.
            log.info("migration %s: %s changed while copying (%s); next round", run.job.id, file.name, error)
            return
        copy = _Run(live)
        copy.reported_at = float("inf")  # the file's own job reports nothing here
        vectors, _ = self.pipeline.embed_chunks(copy, chunks, target.model)
        try:
            self.pipeline.index(copy, target, chunks, vectors)
        except FileGone:
            log.info("migration %s: %s was deleted while copying; next round", run.job.id, file.name)
            return
        except NotFound:
            raise Abandoned(run.job.id) from None
        if not copy.written:
            raise Abandoned(run.job.id)  # the shadow was dropped: cancelled
        keep = {GENERATION_KEY: live.id}
        self.pipeline.delete_points(target.collection, file.name, keep_metadata=keep)
        if len(chunks) != live.chunks:
            log.warning(
                "migration %s: %s gives %d chunks now against %d indexed (parser changed?); "
                "its count follows the new collection",
                run.job.id,
                file.name,
                len(chunks),
                live.chunks,
            )
        # The points carry the file's access list as the catalog had it when they were built
        # (index reads it); a change since is applied to them as the copy is recorded.
        reapply = self.pipeline.set_file_acl(file.name)
        if not self.migrations.mark_copied(kb, run.job.id, file, live.id, len(chunks), copy.acl, reapply):
            # The file changed or went meanwhile: what was copied is stale (a newer upload
            # indexes itself into the shadow, or the next round copies it).
            self.pipeline.delete_points(target.collection, file.name, only_metadata=keep)

    def _unchanged(self, kb: str, file: FileState) -> bool:
        """Whether the file is still as listed (same upload, not deleted)."""
        now = next((found for found in self.migrations.files(kb) if found.name == file.name), None)
        return now is not None and (now.job_id, now.content_hash) == (file.job_id, file.content_hash)
