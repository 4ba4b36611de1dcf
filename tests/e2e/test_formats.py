"""Every file of the evaluation set through the public API: ingested (or cleanly rejected), then found.

The stack runs as ``make run`` runs it, with the faster bundled embedder (``use``) so the whole
module stays around a minute on two cores; parsing, splitting, hybrid search and the catalog
are the same code as with the default model. Each needle is a sentence read from one file (or
a few words when the file has no sentences: a spreadsheet row, a JSON value); the file it came
from must be among the top 3 hits. A few documents of the set are copies of each other (the zip
holds test.docx, test.xlsx and two HTML pages that also lie beside it; test.xls is test.xlsx):
their needles tie across the copies, so each copy set is at most three files and the expected
file is still in the top 3.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from launcher.stack import BackgroundStack, launch_in_background
from testing.office_files import ods_bytes, written_by_libreoffice
from tests.e2e.conftest import OUTPUT

pytestmark = pytest.mark.e2e

KB = "formats_e2e"
SPARSE = "SPARSE-2024-INV-1234_borderless_table.pdf"
TERMINAL = {"succeeded", "failed", "cancelled"}

# (file, query): a distinctive sentence of each file, written by reading the file.
NEEDLES: list[tuple[str, str]] = [
    ("LICENSE", 'THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED'),
    ("REPAIR-2022-INV-001_multipage.pdf", "Insured name Bruce Wayne Year 2025 Claim # 999 Make Batman"),
    (
        "SPARSE-2024-INV-1234_borderless_table.pdf",
        "The primary variance driver is SKU-4563, which shows a -24 unit discrepancy requiring immediate "
        "investigation.",
    ),
    ("equations.docx", "The angle is θ From Eq. 36.1.3"),
    ("movie-theater-booking-2024.pdf", "Product Desc: Holiday Movie Marathon Package, STARLIGHT CINEMAS"),
    (
        "test.docx",
        "Here is a random UUID in the middle of the paragraph! 314b0a30-5b04-470b-b9f7-eed2c2bec74a",
    ),
    ("test.epub", "Here's a second chapter with a different style. This is a blockquote for testing."),
    ("test.json", "uuid_value 9700dc99-6685-40b4-9a3a-5e406dcb37f3"),
    ("test.pdf", "AutoGen provides ready-to-use implementations"),
    ("test.pptx", "This is a nested shape with content in 2 shapes"),
    ("test.xls", "58 6ff4173b-42a5-4784-9b19-f49caff4d93d 22 9"),
    ("test.xlsx", "58 6ff4173b-42a5-4784-9b19-f49caff4d93d 22 9"),
    (
        "test_blog.html",
        "For easy problems, the tuned gpt-3.5-turbo model vastly outperformed untuned gpt-4 in accuracy",
    ),
    (
        "test_files.zip",
        "Figure 1: AutoGen enables diverse LLM-based applications using multi-agent conversations",
    ),
    ("test_mskanji.csv", "髙橋淳 35 名古屋"),
    ("test_notebook.ipynb", 'Test Notebook print("markitdown") Code Cell Below'),
    ("test_outlook_msg.msg", "This is the body of the test email message"),
    ("test_rss.xml", "Ignite 2024: Why nearly 70% of the Fortune 500 now use Microsoft 365 Copilot"),
    (
        "test_wikipedia.html",
        "Microsoft entered the operating system (OS) business in 1980 with its own version of Unix",
    ),
    ("test_with_comment.docx", "This is a test comment. 12df-321a"),
    ("规章制度.txt", "员工每年享有十五天带薪年假，须提前两周在人事系统中提交申请"),
]

# Generated files in legacy encodings, uploaded beside the evaluation set.
GENERATED = {
    "规章制度.txt": (
        "第一章 总则\n本制度适用于知库公司全体员工。\n\n"
        "第二章 假期\n员工每年享有十五天带薪年假，须提前两周在人事系统中提交申请。\n"
    ).encode("gb18030"),
}


@pytest.fixture(scope="module")
def formats_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BackgroundStack]:
    try:
        running = launch_in_background(
            tmp_path_factory.mktemp("zhiku-formats"),
            OUTPUT / "formats-stack.log",
            env={"ZHIKU_EMBED_LOCAL_MODEL": "use"},
        )
    except RuntimeError as error:
        pytest.fail(str(error))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def http(formats_stack: BackgroundStack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=formats_stack.url, timeout=120) as client:
        yield client


def _wait(client: httpx.Client, job_ids: list[str], timeout_s: float = 600) -> dict[str, dict]:
    final: dict[str, dict] = {}
    deadline = time.monotonic() + timeout_s
    while len(final) < len(job_ids) and time.monotonic() < deadline:
        for job_id in job_ids:
            if job_id not in final:
                job = client.get(f"/v1/jobs/{job_id}").raise_for_status().json()
                if job["state"] in TERMINAL:
                    final[job_id] = job
        time.sleep(0.5)
    assert len(final) == len(job_ids), f"jobs not finished after {timeout_s}s"
    return final


@pytest.fixture(scope="module")
def ingested(http: httpx.Client, evaldata: Path) -> dict[str, dict]:
    """Every evaluation document (and the generated files) uploaded in one request; jobs by file."""
    assert http.post("/v1/knowledge_bases", json={"name": KB}).status_code == 201
    docs = sorted(p for p in (evaldata / "docs").iterdir() if p.is_file())
    files = [("files", (p.name, p.read_bytes(), "application/octet-stream")) for p in docs]
    files += [("files", (name, data, "text/plain")) for name, data in GENERATED.items()]
    accepted = http.post(f"/v1/knowledge_bases/{KB}/files", files=files)
    assert accepted.status_code == 202, accepted.text
    jobs = accepted.json()["jobs"]
    assert len(jobs) == len(files)
    final = _wait(http, [job["id"] for job in jobs])
    return {job["file_name"]: job for job in final.values()}


def test_every_document_is_ingested_and_random_bin_cleanly_rejected(ingested: dict[str, dict]) -> None:
    rejected = ingested.pop("random.bin")
    assert rejected["state"] == "failed"
    assert "random.bin: unsupported file type '.bin'" in rejected["error"]
    failed = {name: job["error"] for name, job in ingested.items() if job["state"] != "succeeded"}
    assert not failed, failed
    assert all(job["chunks"] > 0 for job in ingested.values())
    assert {name for name, _ in NEEDLES} == set(ingested), "every ingested file has a needle"


def test_each_needle_finds_its_file_in_the_top_3(http: httpx.Client, ingested: dict[str, dict]) -> None:
    misses = []
    for file_name, query in NEEDLES:
        reply = http.post(f"/v1/knowledge_bases/{KB}/search", json={"query": query, "top_k": 3})
        assert reply.status_code == 200, reply.text
        hits = [hit["file_name"] for hit in reply.json()["data"]]
        if file_name not in hits:
            misses.append((file_name, query, hits))
    assert not misses, misses


def test_chunks_keep_where_they_came_from(http: httpx.Client, ingested: dict[str, dict]) -> None:
    def top(query: str, file_name: str) -> dict:
        body = {"query": query, "top_k": 1, "file_names": [file_name]}
        (hit,) = http.post(f"/v1/knowledge_bases/{KB}/search", json=body).json()["data"]
        return hit["metadata"]

    page = top("Insured name Bruce Wayne Make Batman", "REPAIR-2022-INV-001_multipage.pdf")
    assert page["page"] == "2" and page["file"] == "REPAIR-2022-INV-001_multipage.pdf"
    scan = top("Figure 1: AutoGen enables diverse LLM-based applications", "test_files.zip")
    assert scan["member"] == "test.jpg" and scan["ocr"] == "true"
    sheet = top("6ff4173b-42a5-4784-9b19-f49caff4d93d", "test.xlsx")
    assert sheet["sheet"] == "Sheet1" and sheet["heading"] == "Sheet1"
    row = http.post(
        f"/v1/knowledge_bases/{KB}/search",
        json={"query": "SKU-9201 Hardware $32.50 Verified", "top_k": 1, "file_names": [SPARSE]},
    ).json()["data"][0]
    assert row["metadata"]["page"] == "2"
    assert "| Product Code | Category | Unit Cost | Total Value | Last Audit | Notes |" in row["text"]
    assert "| SKU-9201 | Hardware | $32.50 | $25,285.00 | 2024-10-22 | Verified |" in row["text"]
    picture = top('the string "5bda1dd6" and the primary color of the square', "test.pptx")
    assert picture["page"] == "6"  # text OCRed from the picture on slide 6
    chapter = top("second chapter with a different style", "test.epub")
    assert chapter["chapter"] == "2" and chapter["heading"] == "Chapter 2: More Content"
    assert "chunk_index" in chapter


# -- legacy and open formats ------------------------------------------------------------------

LEGACY_KB = "legacy_formats_e2e"
# (file, the sentence written into it, the needle asked): each file its own subject, so no two
# tie. .doc/.rtf/.odt and .ppt/.odp are written by the real LibreOffice from generated OOXML.
LEGACY: list[tuple[str, str, str]] = [
    ("差旅制度.doc", "出差住宿标准为一线城市每晚六百元，其他城市每晚四百元。", "一线城市出差住宿每晚多少钱"),
    ("设备台账.rtf", "三号车间的注塑机编号为ZS-3307，每季度由设备科检修一次。", "注塑机ZS-3307多久检修一次"),
    (
        "会议纪要.odt",
        "第二季度营销预算增加百分之十五，主要投向华南地区的线上渠道。",
        "第二季度营销预算增加多少",
    ),
    ("产品发布.ppt", "新一代扫地机器人续航达到一百八十分钟，支持自动集尘。", "扫地机器人续航多少分钟"),
    ("培训计划.odp", "新员工入职培训共五天，第三天安排消防演练和急救课程。", "入职培训第几天安排消防演练"),
]
SHEET_ROWS = [
    ["仓库", "品名", "库存"],
    ["杭州一号仓", "不锈钢保温杯", "3200"],
    ["成都二号仓", "竹纤维毛巾", "870"],
]


def _legacy_files(folder: Path) -> dict[str, bytes]:
    import docx
    import pptx

    made = {}
    for name, sentence, _ in LEGACY:
        stem, target = name.rsplit(".", 1)
        if target in ("doc", "rtf", "odt"):
            document = docx.Document()
            document.add_heading(stem, level=1)
            document.add_paragraph(sentence)
            source = folder / f"{stem}.docx"
            document.save(source)
        else:
            deck = pptx.Presentation()
            slide = deck.slides.add_slide(deck.slide_layouts[1])
            slide.shapes.title.text = stem
            slide.placeholders[1].text = sentence
            source = folder / f"{stem}.pptx"
            deck.save(source)
        made[name] = written_by_libreoffice(source, target)
    made["库存表.ods"] = ods_bytes({"库存": SHEET_ROWS})
    return made


def test_legacy_and_open_formats_are_ingested_and_found(http: httpx.Client, tmp_path: Path) -> None:
    files = _legacy_files(tmp_path)
    assert http.post("/v1/knowledge_bases", json={"name": LEGACY_KB}).status_code == 201
    upload = [("files", (name, data, "application/octet-stream")) for name, data in files.items()]
    accepted = http.post(f"/v1/knowledge_bases/{LEGACY_KB}/files", files=upload)
    assert accepted.status_code == 202, accepted.text
    jobs = _wait(http, [job["id"] for job in accepted.json()["jobs"]])
    failed = {job["file_name"]: job["error"] for job in jobs.values() if job["state"] != "succeeded"}
    assert not failed, failed
    needles = [(name, needle) for name, _, needle in LEGACY] + [("库存表.ods", "成都二号仓竹纤维毛巾库存")]
    for file_name, needle in needles:
        reply = http.post(f"/v1/knowledge_bases/{LEGACY_KB}/search", json={"query": needle, "top_k": 1})
        [hit] = reply.json()["data"]
        assert hit["file_name"] == file_name, (needle, hit["file_name"])
    table_hit = http.post(
        f"/v1/knowledge_bases/{LEGACY_KB}/search", json={"query": "竹纤维毛巾", "top_k": 1}
    ).json()["data"][0]
    assert "| 仓库 | 品名 | 库存 |" in table_hit["text"] and table_hit["metadata"]["sheet"] == "库存"
