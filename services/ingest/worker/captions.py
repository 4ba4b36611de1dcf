"""Picture captions from a vision-capable OpenAI-compatible endpoint, written beside the OCR text.

OCR reads the words in a picture; a chart, a photo or a diagram says more than its words, and
a question about it ("which region grew fastest?") finds the picture only by what it shows.
When ``ZHIKU_INGEST_VISION_BASE_URL`` is set the worker parses each file collecting its
pictures (:mod:`services.ingest.documents.parsers.pictures`), sends them to the endpoint as
chat completions with an image content part (a PNG data URL), at most ``vision_concurrency``
at a time in this process, and writes each caption into the picture's line.

Captions are an extra, never a reason to fail: a picture whose call fails, times out or comes
back empty keeps its OCR text, the job succeeds, and the miss is logged (with the job's request
id) and counted in ``zhiku_ingest_picture_captions_total``. Once the endpoint is unreachable
or too slow for one picture, the file's pictures not yet sent are skipped instead of each
waiting out its own timeout. Jobs have no warnings field; the log line and the metric are it.
"""

from __future__ import annotations

import base64
import logging
import math
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from contextvars import copy_context
from dataclasses import dataclass

from services.ingest.config import IngestSettings
from services.ingest.documents.parsers import parse
from services.ingest.documents.parsers.base import Segment
from services.ingest.documents.parsers.pictures import (
    CollectedPicture,
    PictureCollector,
    apply_captions,
    collecting,
)
from services.ingest.metrics import PICTURE_CAPTIONS, STAGE_SECONDS

log = logging.getLogger("zhiku.ingest.captions")

PROMPT_EN = (
    "Describe this picture from a document in one to three sentences, for a search index: what "
    "it shows (chart, table, photo, diagram, screenshot, stamp), its subject, and any names, "
    "numbers or labels in it. Answer in English, without any preamble."
)
PROMPT_ZH = (
    "用一到三句话描述这张文档中的图片，供检索使用：它是什么（图表、表格、照片、示意图、截图、印章），"
    "主题是什么，以及其中的名称、数字或标签。请用中文回答，不要开场白。"
)
PROMPT_BILINGUAL = (
    "Describe this picture in one to three sentences, for a search index: what it shows and any "
    "names, numbers or labels in it. Answer in the language of the text in the picture (Chinese "
    "or English; English when there is none), without any preamble. "
    "用一到三句话描述这张图片，供检索使用；图中文字是中文时请用中文回答。"
)
# A document is Chinese when at least this share of its letters are CJK ideographs.
CJK_SHARE = 0.3
# Fewer letters than this say nothing about the document's language.
MIN_LETTERS = 20
# Captions longer than this (a model that ignores max_tokens) are cut.
MAX_CAPTION_CHARS = 1000


def _is_cjk(char: str) -> bool:
    return "\u4e00" <= char <= "\u9fff" or "\u3400" <= char <= "\u4dbf" or "\uf900" <= char <= "\ufaff"


def prompt_for(texts: list[str], configured: str) -> str:
    """The configured prompt, else the built-in one in the document's language: Chinese or
    English by the letters of its text (OCR text included), bilingual when it has hardly any
    (a picture with no words, a file of pictures)."""
    if configured.strip():
        return configured.strip()
    cjk = letters = 0
    for text in texts:
        for char in text:
            if char.isalpha():
                letters += 1
                cjk += _is_cjk(char)
    if letters < MIN_LETTERS:
        return PROMPT_BILINGUAL
    return PROMPT_ZH if cjk / letters >= CJK_SHARE else PROMPT_EN


@dataclass
class _Outcome:
    caption: str = ""
    problem: str = ""  # why there is no caption


class Captioner:
    """Parses files with their pictures captioned; one per worker process, shared by its threads."""

    def __init__(self, settings: IngestSettings) -> None:
        from openai import OpenAI

        self.settings = settings
        self.client = OpenAI(
            base_url=settings.vision_base_url,
            api_key=settings.vision_api_key.get_secret_value() or "EMPTY",
            timeout=settings.vision_timeout_s,
            max_retries=0,  # the timeout is the picture's whole budget; a miss keeps the OCR text
        )
        self._pool = ThreadPoolExecutor(settings.vision_concurrency, thread_name_prefix="caption")

    @classmethod
    def from_settings(cls, settings: IngestSettings) -> Captioner | None:
        """A captioner when an endpoint is configured and enabled; None means no network calls."""
        return cls(settings) if settings.captions_enabled else None

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.client.close()

    def parse(self, name: str, data: bytes) -> list[Segment]:
        """``parse(name, data)`` with every picture's line carrying its caption where one came."""
        collector = PictureCollector(self.settings.vision_max_pictures, self.settings.vision_max_pixels)
        with collecting(collector):
            segments = parse(name, data)
        if not collector.pictures:
            return segments
        texts = [collector.without_placeholders(segment.text) for segment in segments]
        prompt = prompt_for(texts, self.settings.vision_prompt)
        started = time.perf_counter()
        outcomes = self.caption_all(collector.pictures, prompt)
        STAGE_SECONDS.labels("caption").observe(time.perf_counter() - started)
        missed = {number: o.problem for number, o in outcomes.items() if not o.caption}
        if missed:
            reasons = sorted(set(missed.values()))
            log.warning(
                "%s: %d of %d pictures not captioned (%s); they keep their OCR text",
                name,
                len(missed),
                len(outcomes),
                "; ".join(reasons[:3]),
            )
        captions = {number: o.caption for number, o in outcomes.items() if o.caption}
        return apply_captions(name, segments, collector, captions)

    def caption_all(self, pictures: list[CollectedPicture], prompt: str) -> dict[int, _Outcome]:
        """Each picture's caption or the reason it has none, within a deadline for the lot."""
        unreachable = threading.Event()  # set once a call times out or cannot connect
        futures: dict[int, Future[_Outcome]] = {
            picture.number: self._pool.submit(copy_context().run, self._caption, picture, prompt, unreachable)
            for picture in pictures
        }
        rounds = math.ceil(len(pictures) / self.settings.vision_concurrency) + 1
        deadline = time.monotonic() + self.settings.vision_timeout_s * rounds
        outcomes: dict[int, _Outcome] = {}
        for number, future in futures.items():
            try:
                outcomes[number] = future.result(timeout=max(0.0, deadline - time.monotonic()))
            except FutureTimeout:
                if future.cancel():  # never started; one still running counts its own outcome
                    PICTURE_CAPTIONS.labels("timeout").inc()
                outcomes[number] = _Outcome(problem="timed out")
        return outcomes

    def _caption(self, picture: CollectedPicture, prompt: str, unreachable: threading.Event) -> _Outcome:
        import openai

        if unreachable.is_set():
            PICTURE_CAPTIONS.labels("skipped").inc()
            return _Outcome(problem="skipped: the endpoint did not answer an earlier picture")
        url = "data:image/png;base64," + base64.b64encode(picture.png).decode("ascii")
        try:
            reply = self.client.chat.completions.create(
                model=self.settings.vision_model,
                messages=[
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": prompt},
                            {"type": "image_url", "image_url": {"url": url}},
                        ],
                    }
                ],
                max_tokens=self.settings.vision_max_tokens,
                temperature=0,
            )
        except (openai.APITimeoutError, openai.APIConnectionError) as error:
            unreachable.set()
            outcome = "timeout" if isinstance(error, openai.APITimeoutError) else "failed"
            PICTURE_CAPTIONS.labels(outcome).inc()
            return _Outcome(problem=f"{type(error).__name__}: {error}")
        except openai.OpenAIError as error:
            PICTURE_CAPTIONS.labels("failed").inc()
            return _Outcome(problem=f"{type(error).__name__}: {error}")
        choices = reply.choices or []
        text = (choices[0].message.content or "") if choices else ""
        caption = " ".join(text.split())[:MAX_CAPTION_CHARS]
        if not caption:
            PICTURE_CAPTIONS.labels("failed").inc()
            return _Outcome(problem="the endpoint answered an empty caption")
        PICTURE_CAPTIONS.labels("captioned").inc()
        return _Outcome(caption=caption)
