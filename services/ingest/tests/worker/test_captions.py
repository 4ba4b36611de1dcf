"""Picture captions at ingest, against the repo's OpenAI-protocol server on loopback.

The captioner talks to the fake with the real ``openai`` SDK; the fake checks the image
content parts as OpenAI does and records them, so each test can say what arrived (a PNG data
URL, the prompt, the model) and script the caption by the picture it got. The pipeline tests
run real embed and retrieve services and read the indexed chunks back.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docx
import openai
import pytest
from docx.shared import Inches
from PIL import Image, ImageDraw, ImageFont
from prometheus_client import REGISTRY

from services.ingest.config import IngestSettings
from services.ingest.documents.parsers import ParseError, parse
from services.ingest.store.blobs import BlobStore
from services.ingest.store.records import JobState
from services.ingest.tests.conftest import Dependencies, ingest_settings, unused_address
from services.ingest.worker.captions import PROMPT_BILINGUAL, PROMPT_EN, PROMPT_ZH, Captioner
from services.ingest.worker.pipeline import IngestPipeline
from testing.fake_openai import FakeOpenAI, RecordedCall, ThreadedFake
from testing.pdf_files import Picture, Text, line_by_line_pdf
from zhiku.v1 import retrieve_pb2, retrieve_pb2_grpc

DELIVERY_CAPTION = "A signed delivery note with a handwritten signature."
CHART_CAPTION = "A pie chart: one red and one blue slice."


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _text_picture(lines: list[str]) -> bytes:
    image = Image.new("RGB", (900, 100 + 90 * len(lines)), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=48)
    for number, line in enumerate(lines):
        draw.text((30, 30 + 90 * number), line, fill="black", font=font)
    return _png(image)


def _chart_picture() -> bytes:
    """A picture without a word in it: OCR reads nothing, a caption says what it shows."""
    image = Image.new("RGB", (400, 300), "white")
    draw = ImageDraw.Draw(image)
    draw.pieslice((50, 20, 330, 280), 0, 250, fill="red")
    draw.pieslice((50, 20, 330, 280), 250, 360, fill="blue")
    return _png(image)


def _caption_by_picture(call: RecordedCall) -> str:
    """The scripted vision model: the chart's caption for a picture with red in it."""
    (image,) = call.images
    with Image.open(io.BytesIO(image.data)) as picture:
        colours = picture.convert("RGB").getcolors(1 << 24) or []
    red = any(isinstance(c, tuple) and c[0] > 200 and c[1] < 60 and c[2] < 60 for _, c in colours)
    return CHART_CAPTION if red else DELIVERY_CAPTION


@pytest.fixture(scope="module")
def delivery_pdf() -> bytes:
    texts = [
        Text(72, 72, "The signed delivery note is pasted below as a picture."),
        Text(72, 400, "Keep the original in the archive for seven years."),
    ]
    picture = Picture(72, 100, 400, 120, _text_picture(["Delivery code KX-4417", "Received by Lena Ortiz"]))
    return line_by_line_pdf([texts], {0: [picture]})


@pytest.fixture(scope="module")
def report_docx() -> bytes:
    document = docx.Document()
    document.add_paragraph("第三季度销售报告：各地区的销售额见下图。")
    document.add_picture(io.BytesIO(_chart_picture()), width=Inches(3))
    document.add_paragraph("华东地区的销售额增长最快，华南地区次之。")
    document.add_picture(io.BytesIO(_text_picture(["Delivery code KX-4417"])), width=Inches(4))
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


@pytest.fixture
def fake() -> Iterator[ThreadedFake]:
    server = ThreadedFake(FakeOpenAI([], respond=_caption_by_picture, api_key="vision-key", model="qwen-vl"))
    server.start()
    yield server
    server.close()


def _settings(tmp_path: Path, base_url: str, **overrides: Any) -> IngestSettings:
    values: dict[str, Any] = {
        "vision_base_url": base_url,
        "vision_model": "qwen-vl",
        "vision_api_key": "vision-key",
        "vision_timeout_s": 10.0,
        **overrides,
    }
    return ingest_settings(tmp_path, **values)


@pytest.fixture
def captioner(tmp_path: Path, fake: ThreadedFake) -> Iterator[Captioner]:
    built = Captioner.from_settings(_settings(tmp_path, fake.fake.base_url))
    assert built is not None
    yield built
    built.close()


def _captions(outcome: str) -> float:
    return REGISTRY.get_sample_value("zhiku_ingest_picture_captions_total", {"outcome": outcome}) or 0.0


def test_a_pdf_picture_is_captioned_beside_its_ocr_text(
    captioner: Captioner, fake: ThreadedFake, delivery_pdf: bytes
) -> None:
    before = _captions("captioned")
    (page,) = captioner.parse("note.pdf", delivery_pdf)
    line = next(line for line in page.text.splitlines() if line.startswith("[image] "))
    caption, text = line.removeprefix("[image] ").split(" | text: ")
    assert caption == f"caption: {DELIVERY_CAPTION}"
    assert "KX-4417" in text.replace(" ", "") and "lena" in text.lower()
    assert page.text.index("pasted below") < page.text.index("[image]") < page.text.index("Keep the original")
    (call,) = fake.fake.calls
    assert call.headers["authorization"] == "Bearer vision-key"
    assert call.body["model"] == "qwen-vl" and call.body["max_tokens"] == 200
    assert call.prompt == PROMPT_EN  # the document is English
    (image,) = call.images
    assert image.url.startswith("data:image/png;base64,") and image.media_type == "image/png"
    with Image.open(io.BytesIO(image.data)) as picture:
        assert picture.format == "PNG" and picture.size == (900, 280)  # the picture as embedded
    assert _captions("captioned") == before + 1


def test_docx_pictures_are_captioned_in_the_documents_language(
    captioner: Captioner, fake: ThreadedFake, report_docx: bytes
) -> None:
    (segment,) = captioner.parse("report.docx", report_docx)
    blocks = segment.text.split("\n\n")
    assert blocks[:2] == ["第三季度销售报告：各地区的销售额见下图。", f"[image] caption: {CHART_CAPTION}"]
    assert blocks[3].startswith(f"[image] caption: {DELIVERY_CAPTION} | text: ")
    assert "KX-4417" in blocks[3].replace(" ", "")
    assert len(fake.fake.calls) == 2
    assert {call.prompt for call in fake.fake.calls} == {PROMPT_ZH}
    # Without captions the chart has no line at all: OCR finds no word in it.
    (plain,) = parse("report.docx", report_docx)
    assert plain.text.count("[image]") == 1 and "caption" not in plain.text


def test_a_slide_picture_is_captioned(captioner: Captioner, fake: ThreadedFake) -> None:
    import pptx
    from pptx.util import Inches as SlideInches

    deck = pptx.Presentation()
    slide = deck.slides.add_slide(deck.slide_layouts[5])
    slide.shapes.title.text = "Regional sales"
    slide.shapes.add_picture(io.BytesIO(_chart_picture()), SlideInches(1), SlideInches(2))
    buffer = io.BytesIO()
    deck.save(buffer)
    (segment,) = captioner.parse("deck.pptx", buffer.getvalue())
    assert segment.text == f"# Regional sales\n\n[image] caption: {CHART_CAPTION}"
    assert segment.metadata == {"page": "1"} and len(fake.fake.calls) == 1


def test_large_pictures_are_scaled_down_and_the_same_picture_is_captioned_once(
    tmp_path: Path, fake: ThreadedFake
) -> None:
    chart = _chart_picture()
    document = docx.Document()
    for _ in range(3):
        document.add_picture(io.BytesIO(chart))
    buffer = io.BytesIO()
    document.save(buffer)
    small = Captioner.from_settings(_settings(tmp_path, fake.fake.base_url, vision_max_pixels=30_000))
    assert small is not None
    try:
        (segment,) = small.parse("pies.docx", buffer.getvalue())
    finally:
        small.close()
    (call,) = fake.fake.calls
    with Image.open(io.BytesIO(call.images[0].data)) as picture:
        assert picture.width * picture.height <= 30_000 and picture.width == 200  # 400x300 halved
    assert call.prompt == PROMPT_BILINGUAL  # the document has no words of its own
    assert segment.text.split("\n\n") == ["[image] caption: A pie chart: one red and one blue slice."] * 3


def test_a_picture_file_gets_its_caption_before_its_text(captioner: Captioner, fake: ThreadedFake) -> None:
    (segment,) = captioner.parse("stamp.png", _text_picture(["APPROVED 2024-7842"]))
    assert segment.text.startswith(f"[image] caption: {DELIVERY_CAPTION} | text: ")
    assert "2024-7842" in segment.text and segment.metadata == {"ocr": "true"}


def test_an_endpoint_that_is_down_leaves_the_ocr_text(tmp_path: Path, delivery_pdf: bytes) -> None:
    down = Captioner.from_settings(_settings(tmp_path, f"http://{unused_address()}/v1"))
    assert down is not None
    before = _captions("failed")
    try:
        assert down.parse("note.pdf", delivery_pdf) == parse("note.pdf", delivery_pdf)
        # A picture file with no text and no caption fails as it would without captions.
        with pytest.raises(ParseError, match="no text found"):
            down.parse("chart.png", _chart_picture())
    finally:
        down.close()
    assert _captions("failed") == before + 2


def test_a_slow_endpoint_times_out_and_the_rest_of_the_file_is_skipped(
    tmp_path: Path, report_docx: bytes
) -> None:
    slow = ThreadedFake(FakeOpenAI(["never read"], api_key="vision-key", answer_delay_s=4.0))
    slow.start()
    captioner = Captioner.from_settings(
        _settings(tmp_path, slow.fake.base_url, vision_timeout_s=1.0, vision_concurrency=1)
    )
    assert captioner is not None
    timeouts, skipped = _captions("timeout"), _captions("skipped")
    try:
        (segment,) = captioner.parse("report.docx", report_docx)
    finally:
        captioner.close()
        slow.close()
    assert segment == parse("report.docx", report_docx)[0]  # OCR text only
    assert len(slow.fake.calls) == 1  # the second picture was never sent
    assert (_captions("timeout"), _captions("skipped")) == (timeouts + 1, skipped + 1)


def test_an_error_answer_keeps_the_ocr_text(tmp_path: Path, delivery_pdf: bytes) -> None:
    refusing = ThreadedFake(FakeOpenAI([], api_key="vision-key", error_status=400))
    refusing.start()
    captioner = Captioner.from_settings(_settings(tmp_path, refusing.fake.base_url))
    assert captioner is not None
    try:
        assert captioner.parse("note.pdf", delivery_pdf) == parse("note.pdf", delivery_pdf)
    finally:
        captioner.close()
        refusing.close()
    assert len(refusing.fake.calls) == 1


def test_the_fake_rejects_malformed_image_parts_as_openai_does(fake: ThreadedFake) -> None:
    client = openai.OpenAI(base_url=fake.fake.base_url, api_key="vision-key", max_retries=0)
    bad_parts = [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,@@not base64@@"}},
        {"type": "image_url", "image_url": {"url": "data:text/plain;base64,aGVsbG8="}},
        {"type": "image_url", "image_url": "https://example.com/a.png"},
        {"type": "audio", "audio": "..."},
    ]
    for part in bad_parts:
        with pytest.raises(openai.BadRequestError):
            client.chat.completions.create(
                model="qwen-vl",
                messages=[{"role": "user", "content": [{"type": "text", "text": "?"}, part]}],  # type: ignore[misc, list-item]
            )
    client.close()


def test_captions_are_off_without_an_endpoint_or_when_disabled(tmp_path: Path, fake: ThreadedFake) -> None:
    assert Captioner.from_settings(ingest_settings(tmp_path)) is None
    disabled = _settings(tmp_path, fake.fake.base_url, vision_enabled=False)
    assert not disabled.captions_enabled and Captioner.from_settings(disabled) is None
    with pytest.raises(ValueError, match="vision_model"):
        ingest_settings(tmp_path, vision_base_url="http://127.0.0.1:1/v1")
    with pytest.raises(ValueError, match="http"):
        ingest_settings(tmp_path, vision_base_url="vllm:8000", vision_model="m")


# -- through the worker's pipeline, with real embed and retrieve ---------------------------


def _run_job(pipeline: IngestPipeline, kb: str, name: str, content: bytes) -> str:
    pipeline.catalog.knowledge_bases.create(kb)
    BlobStore(pipeline.blobs.root).write(kb, name, content)
    digest = hashlib.sha256(content).hexdigest()
    job_id = pipeline.lifecycle.submit_file(kb, name, len(content), digest, 250, 50).id
    assert pipeline.run(job_id) is JobState.SUCCEEDED
    return job_id


def _chunk_texts(dependencies: Dependencies, kb: str) -> list[str]:
    import grpc

    with grpc.insecure_channel(dependencies.retrieve_address) as channel:
        stub = retrieve_pb2_grpc.RetrieveServiceStub(channel)
        search = retrieve_pb2.SearchRequest(collection=kb, vector=[0.0] * 511 + [1.0], top_k=100)
        return [hit.text for hit in stub.Search(search, timeout=30).hits]


def _pipeline(tmp_path: Path, dependencies: Dependencies, base_url: str, **overrides: Any) -> IngestPipeline:
    values: dict[str, Any] = {
        "embed_addr": dependencies.embed_address,
        "retrieve_addr": dependencies.retrieve_address,
        "vision_base_url": base_url,
        "vision_model": "qwen-vl",
        "vision_api_key": "vision-key",
        **overrides,
    }
    settings = ingest_settings(tmp_path, **values)
    return IngestPipeline.from_settings(settings)


def test_the_pipeline_indexes_captions_with_the_ocr_text(
    tmp_path: Path, dependencies: Dependencies, fake: ThreadedFake, delivery_pdf: bytes, report_docx: bytes
) -> None:
    pipeline = _pipeline(tmp_path, dependencies, fake.fake.base_url)
    try:
        _run_job(pipeline, "captions_pdf", "note.pdf", delivery_pdf)
        _run_job(pipeline, "captions_docx", "report.docx", report_docx)
    finally:
        pipeline.close()
    pdf_chunks = _chunk_texts(dependencies, "captions_pdf")
    (captioned,) = [chunk for chunk in pdf_chunks if f"[image] caption: {DELIVERY_CAPTION} | text: " in chunk]
    assert "KX-4417" in captioned.replace(" ", "")
    docx_chunks = "\n".join(_chunk_texts(dependencies, "captions_docx"))
    assert f"[image] caption: {CHART_CAPTION}" in docx_chunks and DELIVERY_CAPTION in docx_chunks
    assert len(fake.fake.calls) == 3


def test_the_pipeline_succeeds_with_ocr_text_when_the_endpoint_is_down(
    tmp_path: Path, dependencies: Dependencies, delivery_pdf: bytes
) -> None:
    pipeline = _pipeline(tmp_path, dependencies, f"http://{unused_address()}/v1", vision_timeout_s=2.0)
    try:
        _run_job(pipeline, "captions_down", "note.pdf", delivery_pdf)
    finally:
        pipeline.close()
    chunks = "\n".join(_chunk_texts(dependencies, "captions_down"))
    assert "[image] " in chunks and "KX-4417" in chunks.replace(" ", "") and "caption:" not in chunks


@pytest.mark.parametrize("overrides", [{"vision_base_url": ""}, {"vision_enabled": False}])
def test_the_pipeline_makes_no_call_without_captions(
    tmp_path: Path,
    dependencies: Dependencies,
    fake: ThreadedFake,
    report_docx: bytes,
    overrides: dict[str, Any],
    request: pytest.FixtureRequest,
) -> None:
    pipeline = _pipeline(tmp_path, dependencies, fake.fake.base_url, **overrides)
    kb = f"captions_off_{abs(hash(request.node.name)) % 10**6}"
    try:
        _run_job(pipeline, kb, "report.docx", report_docx)
    finally:
        pipeline.close()
    chunks = "\n".join(_chunk_texts(dependencies, kb))
    assert fake.fake.calls == []
    assert "[image] " in chunks and "KX-4417" in chunks.replace(" ", "") and "caption:" not in chunks
