"""The web UI in a real browser against the real stack: the issue's whole path and more.

Create a knowledge base, drop two files, watch both reach "succeeded", search, ask a
question, see the streamed answer and a citation naming the right file, open the cited
passage and the original, delete the file; conversations and feedback when the gateway has
them; the Chinese interface on a phone-sized screen.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
from playwright.sync_api import Page, expect

from tests.ui.conftest import enter_key_when_asked, ingest

LEAVE = (
    "Annual leave policy. Every employee receives fifteen days of paid annual leave per calendar year. "
    "Requests for annual leave are submitted in the HR portal at least two weeks in advance and "
    "approved by the team manager. Unused annual leave days expire on the thirty-first of March.\n"
)
EXPENSES = (
    "# Travel expenses\n\nTravel expense reimbursement requires the original receipts. Hotel costs are "
    "reimbursed up to 180 euros per night. Submit the expense report within thirty days of the trip "
    "through the finance system; the finance team pays it with the next salary.\n"
)


def drop_files(page: Page, files: dict[str, str]) -> None:
    """A real ``drop`` event carrying File objects, as a drag from the desktop produces."""
    page.get_by_test_id("dropzone").evaluate(
        """(zone, files) => {
            const transfer = new DataTransfer();
            for (const [name, text] of Object.entries(files)) {
                transfer.items.add(new File([text], name, { type: "text/plain" }));
            }
            const init = { dataTransfer: transfer, bubbles: true, cancelable: true };
            zone.dispatchEvent(new DragEvent("dragover", init));
            zone.dispatchEvent(new DragEvent("drop", init));
        }""",
        files,
    )


def confirm(page: Page) -> None:
    page.get_by_test_id("confirm-ok").click()
    expect(page.get_by_test_id("confirm-dialog")).to_have_count(0)


def test_knowledge_base_upload_ask_cite_delete(page: Page, api: httpx.Client, output_dir: Path) -> None:
    base = str(api.base_url).rstrip("/")
    kb = "ui-handbook"
    page.goto(f"{base}/#/kb")
    enter_key_when_asked(page)  # the gateway has keys: the UI asks once and keeps the key

    # Create and describe a knowledge base.
    page.get_by_test_id("kb-name").fill(kb)
    page.get_by_test_id("kb-description").fill("HR and finance rules")
    page.get_by_test_id("kb-create").click()
    expect(page.get_by_test_id("kb-title")).to_have_text(kb)
    expect(page.get_by_test_id("kb-desc")).to_have_text("HR and finance rules")
    assert api.get(f"/v1/knowledge_bases/{kb}").json()["description"] == "HR and finance rules"

    # Drop two files; each gets its own progress row that ends at "succeeded".
    drop_files(page, {"leave-policy.txt": LEAVE, "expenses.md": EXPENSES})
    for name in ("leave-policy.txt", "expenses.md"):
        row = page.locator(f'[data-testid="upload-row"][data-file="{name}"]')
        expect(row).to_be_visible()
        expect(row).to_have_attribute("data-state", "succeeded", timeout=120_000)
        expect(row.get_by_test_id("upload-state")).to_contain_text("100%")

    # The file table shows both with their chunks, state and upload time.
    for name in ("leave-policy.txt", "expenses.md"):
        row = page.locator(f'[data-testid="file-row"][data-file="{name}"]')
        expect(row).to_have_attribute("data-state", "succeeded")
        cells = row.locator("td")
        assert int(cells.nth(2).inner_text()) >= 1
        assert re.search(r"\d", cells.nth(5).inner_text()), "uploaded-at column is empty"
    expect(page.get_by_test_id("kb-stats")).to_contain_text("2 files")

    # Reindex (when the gateway has it) starts a new job that is followed to the end too.
    if "/v1/knowledge_bases/{kb}/files/{file_name}/reindex" in api.get("/openapi.json").json()["paths"]:
        upload = page.locator('[data-testid="upload-row"][data-file="expenses.md"]')
        first_job = upload.get_attribute("data-job")
        page.locator('[data-testid="file-row"][data-file="expenses.md"]').get_by_test_id(
            "file-reindex"
        ).click()
        expect(upload).not_to_have_attribute("data-job", first_job or "")
        expect(upload).to_have_attribute("data-state", "succeeded", timeout=120_000)

    # Search shows chunks with scores, the right file first.
    page.get_by_test_id("kb-search-input").fill("hotel receipts reimbursement")
    page.get_by_test_id("kb-search-button").click()
    first_hit = page.get_by_test_id("search-hit").first
    expect(first_hit).to_contain_text("expenses.md")
    score = float(first_hit.get_by_test_id("hit-score").inner_text())
    assert 0 < score <= 1
    page.screenshot(path=str(output_dir / "kb-page.png"), full_page=True)

    # Ask in knowledge-base chat: a streamed answer with numbered sources.
    page.get_by_test_id("nav-chat").click()
    page.get_by_test_id("chat-mode").select_option("kb")
    page.get_by_test_id("chat-kb").select_option(kb)
    page.get_by_test_id("chat-input").fill("How many days of paid annual leave does an employee receive?")
    with page.expect_request("**/v1/chat/completions") as sent:
        page.get_by_test_id("chat-send").click()
    request = sent.value
    body = json.loads(request.post_data or "{}")
    assert body["stream"] is True and body["knowledge_base"] == kb
    response = request.response()
    assert response is not None and response.headers["content-type"].startswith("text/event-stream")
    answer = page.get_by_test_id("assistant-message").last
    expect(answer).to_have_attribute("data-state", "done", timeout=60_000)
    expect(answer.get_by_test_id("answer")).to_contain_text("fifteen days")
    first_source = answer.get_by_test_id("source").first
    expect(first_source).to_contain_text("[1] leave-policy.txt")
    # Once the answer is complete, the source it quotes says that it backs the answer.
    expect(first_source).to_have_attribute("data-support", "supported")
    expect(first_source.get_by_test_id("source-support")).to_have_attribute("aria-label", "Backs the answer")
    expect(answer.get_by_test_id("unsupported")).to_have_count(0)
    expect(answer.get_by_test_id("abstained-notice")).to_be_hidden()

    # The answer's inline [1] marker opens the same source.
    answer.locator("button.cite").first.click()
    expect(page.get_by_test_id("passage-dialog")).to_contain_text("leave-policy.txt")
    page.get_by_test_id("dialog-close").click()
    expect(page.get_by_test_id("passage-dialog")).to_have_count(0)

    # The citation opens its passage, and the passage links to the original file.
    first_source.click()
    passage = page.get_by_test_id("passage-dialog")
    expect(passage.get_by_test_id("passage-text")).to_contain_text("fifteen days of paid annual leave")
    link = passage.get_by_test_id("passage-open-file")
    assert link.get_attribute("href") == f"/v1/knowledge_bases/{kb}/files/leave-policy.txt/content"
    with page.context.expect_page() as opened:
        link.click()  # fetched with the API key, shown from a blob URL
    original = opened.value
    original.wait_for_load_state()
    expect(original.locator("body")).to_contain_text("Unused annual leave days expire")
    original.close()
    passage.get_by_test_id("dialog-close").click()
    page.screenshot(path=str(output_dir / "chat-page.png"), full_page=True)

    check_conversations_and_feedback(page, api)

    # Delete one file from the table (after confirming); the other stays.
    page.get_by_test_id("nav-kb").click()
    row = page.locator('[data-testid="file-row"][data-file="leave-policy.txt"]')
    row.get_by_test_id("file-delete").click()
    confirm(page)
    expect(row).to_have_count(0)
    listed = api.get(f"/v1/knowledge_bases/{kb}/files").json()["data"]
    names = [f.get("file_name") or f.get("name") for f in listed]
    assert names == ["expenses.md"]

    # Delete the knowledge base (after confirming).
    page.get_by_test_id("kb-delete").click()
    confirm(page)
    expect(page.locator(f'[data-testid="kb-item"][data-name="{kb}"]')).to_have_count(0)
    assert api.get(f"/v1/knowledge_bases/{kb}").status_code == 404


def check_conversations_and_feedback(page: Page, api: httpx.Client) -> None:
    """Conversation list and thumbs, when this gateway stores conversations."""
    if api.get("/v1/conversations").status_code == 404:
        expect(page.get_by_test_id("conversation-list")).to_be_hidden()
        expect(page.get_by_test_id("thumb-up")).to_have_count(0)
        return
    stored = api.get("/v1/conversations").json()["data"]
    assert stored, "the UI's chat created no conversation"
    item = page.get_by_test_id("conversation-item").first
    expect(item).to_contain_text("How many days of paid annual leave")

    # Thumbs up on the stored answer reaches the message's feedback.
    page.get_by_test_id("thumb-up").last.click()
    expect(page.get_by_test_id("thumb-up").last).to_have_class(re.compile(r"\bchosen\b"))
    messages = api.get(f"/v1/conversations/{stored[0]['id']}").json()["messages"]
    assistant = [m for m in messages if m["role"] == "assistant"][-1]
    assert assistant["feedback"] and assistant["feedback"]["score"] == 100

    # Rename, reopen (history and citations come back), then delete.
    item.get_by_test_id("conversation-rename").click()
    dialog = page.get_by_test_id("rename-dialog")
    dialog.get_by_test_id("prompt-input").fill("Leave question")
    dialog.get_by_test_id("prompt-ok").click()
    expect(page.get_by_test_id("conversation-item").first).to_contain_text("Leave question")
    assert api.get(f"/v1/conversations/{stored[0]['id']}").json()["title"] == "Leave question"
    page.get_by_test_id("conversation-new").click()
    expect(page.get_by_test_id("assistant-message")).to_have_count(0)
    page.get_by_test_id("conversation-item").first.locator("button.title").click()
    expect(page.get_by_test_id("assistant-message").last.get_by_test_id("source").first).to_contain_text(
        "leave-policy.txt"
    )
    page.get_by_test_id("conversation-item").first.get_by_test_id("conversation-delete").click()
    confirm(page)
    expect(page.get_by_test_id("conversation-item")).to_have_count(len(stored) - 1)
    assert api.get(f"/v1/conversations/{stored[0]['id']}").status_code == 404


def test_chinese_interface_on_a_narrow_screen(page: Page, api: httpx.Client, output_dir: Path) -> None:
    base = str(api.base_url).rstrip("/")
    kb = "手机知识库"
    api.post("/v1/knowledge_bases", json={"name": kb, "description": "窄屏测试"}).raise_for_status()
    try:
        page.set_viewport_size({"width": 390, "height": 844})
        page.goto(f"{base}/#/kb")
        enter_key_when_asked(page)
        page.get_by_test_id("lang-toggle").click()
        expect(page.get_by_test_id("nav-kb")).to_have_text("知识库")
        expect(page.get_by_test_id("nav-chat")).to_have_text("对话")
        page.locator(f'[data-testid="kb-item"][data-name="{kb}"] button').click()
        expect(page.get_by_test_id("kb-title")).to_have_text(kb)
        expect(page.get_by_test_id("kb-delete")).to_have_text("删除知识库")
        expect(page.get_by_test_id("dropzone")).to_contain_text("拖到这里")
        # Nothing wider than the screen: no sideways scrolling on a phone.
        width = page.evaluate("() => document.documentElement.scrollWidth")
        assert width <= 390, f"page is {width}px wide on a 390px screen"
        page.screenshot(path=str(output_dir / "kb-page-narrow-zh.png"), full_page=True)

        # The choice survives a reload, and the key is remembered (no second prompt).
        page.reload()
        expect(page.get_by_test_id("nav-chat")).to_have_text("对话")
        page.get_by_test_id("nav-chat").click()
        expect(page.get_by_test_id("chat-send")).to_have_text("发送")
        width = page.evaluate("() => document.documentElement.scrollWidth")
        assert width <= 390, f"chat page is {width}px wide on a 390px screen"
        page.screenshot(path=str(output_dir / "chat-page-narrow-zh.png"), full_page=True)
        expect(page.get_by_test_id("api-key-dialog")).to_have_count(0)
        page.get_by_test_id("lang-toggle").click()
        expect(page.get_by_test_id("chat-send")).to_have_text("Send")
    finally:
        api.delete(f"/v1/knowledge_bases/{kb}")


def test_bad_input_shows_the_gateways_message(page: Page, api: httpx.Client) -> None:
    base = str(api.base_url).rstrip("/")
    page.goto(f"{base}/#/kb")
    enter_key_when_asked(page)
    page.get_by_test_id("kb-name").fill("bad/name")
    page.get_by_test_id("kb-create").click()
    toast = page.get_by_test_id("toast-error")
    expect(toast).to_be_visible()
    assert toast.inner_text().strip(), "the error toast is empty"
    assert api.get("/v1/knowledge_bases/bad%2Fname").status_code in (404, 422)


def test_file_chat_and_copy_answer(page: Page, api: httpx.Client) -> None:
    base = str(api.base_url).rstrip("/")
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=base)
    page.goto(f"{base}/#/chat")
    enter_key_when_asked(page)
    page.get_by_test_id("chat-mode").select_option("files")
    warranty = b"Warranty terms. The espresso machine carries a warranty of three years from purchase.\n"
    page.get_by_test_id("file-chat-input").set_input_files(
        [{"name": "warranty.txt", "mimeType": "text/plain", "buffer": warranty}]
    )
    status = page.get_by_test_id("file-chat-status")
    if "/v1/file_chats" not in api.get("/openapi.json").json()["paths"]:
        expect(status).to_have_text("File chat is not available on this gateway.")
        return
    expect(status).to_contain_text("1 file(s) ready: warranty.txt", timeout=120_000)

    page.get_by_test_id("chat-input").fill("How long is the warranty of the espresso machine?")
    page.get_by_test_id("chat-input").press("Enter")
    answer = page.get_by_test_id("assistant-message").last
    expect(answer).to_have_attribute("data-state", "done", timeout=60_000)
    expect(answer.get_by_test_id("answer")).to_contain_text("three years")
    expect(answer.get_by_test_id("source").first).to_contain_text("[1] warranty.txt")

    answer.get_by_test_id("copy-answer").click()
    expect(answer.get_by_test_id("copy-answer")).to_have_text("Copied")
    copied = page.evaluate("() => navigator.clipboard.readText()")
    # The answer's Markdown source is copied, citation markers included.
    assert "three years" in copied and "[1]" in copied, copied


def test_older_gateway_without_events_or_conversations(page: Page, api: httpx.Client) -> None:
    """Routes another gateway may lack answer 404 here: the UI polls jobs and keeps history itself."""
    not_found = {"status": 404, "content_type": "application/json", "body": '{"detail":"Not Found"}'}
    page.route("**/v1/jobs/*/events", lambda route: route.fulfill(**not_found))
    page.route("**/v1/conversations**", lambda route: route.fulfill(**not_found))
    base = str(api.base_url).rstrip("/")
    kb = "ui-older-gateway"
    api.post("/v1/knowledge_bases", json={"name": kb}).raise_for_status()
    try:
        page.goto(f"{base}/#/kb")
        enter_key_when_asked(page)
        page.locator(f'[data-testid="kb-item"][data-name="{kb}"] button').click()
        expect(page.get_by_test_id("kb-title")).to_have_text(kb)
        parking = b"Visitors park in garage B, level two.\n"
        page.get_by_test_id("upload-input").set_input_files(
            [{"name": "parking.txt", "mimeType": "text/plain", "buffer": parking}]
        )
        row = page.locator('[data-testid="upload-row"][data-file="parking.txt"]')
        expect(row).to_have_attribute("data-state", "succeeded", timeout=120_000)  # by polling

        page.get_by_test_id("nav-chat").click()
        expect(page.get_by_test_id("conversation-list")).to_be_hidden()
        page.get_by_test_id("chat-mode").select_option("kb")
        page.get_by_test_id("chat-kb").select_option(kb)
        for question in ("Where do visitors park?", "Which level of the garage?"):
            page.get_by_test_id("chat-input").fill(question)
            with page.expect_request("**/v1/chat/completions") as sent:
                page.get_by_test_id("chat-send").click()
            expect(page.get_by_test_id("assistant-message").last).to_have_attribute("data-state", "done")
        body = json.loads(sent.value.post_data or "{}")
        assert "conversation_id" not in body
        # The second question carries the first turn as history (history length 6 by default).
        assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
        assert body["messages"][0]["content"] == "Where do visitors park?"
        answer = page.get_by_test_id("assistant-message").last
        expect(answer.get_by_test_id("source").first).to_contain_text("parking.txt")
        expect(answer.get_by_test_id("thumb-up")).to_have_count(0)  # no stored message to rate
    finally:
        api.delete(f"/v1/knowledge_bases/{kb}")


def test_an_answer_the_knowledge_base_does_not_hold_is_a_notice(
    page: Page, api: httpx.Client, output_dir: Path
) -> None:
    """A question about something no file mentions: the gateway abstains, and the UI shows the
    reply as a notice with the nearest passages folded away as not used."""
    base = str(api.base_url).rstrip("/")
    kb = "ui-abstain"
    ingest(api, kb, {"leave-policy.txt": LEAVE, "expenses.md": EXPENSES})
    try:
        page.goto(f"{base}/#/chat")
        enter_key_when_asked(page)
        page.get_by_test_id("chat-mode").select_option("kb")
        page.get_by_test_id("chat-kb").select_option(kb)
        page.get_by_test_id("chat-input").fill("Who won the 1998 football world cup?")
        page.get_by_test_id("chat-send").click()
        answer = page.get_by_test_id("assistant-message").last
        expect(answer).to_have_attribute("data-state", "done", timeout=60_000)
        expect(answer).to_have_attribute("data-abstained", "")
        notice = answer.get_by_test_id("abstained-notice")
        expect(notice).to_be_visible()
        expect(notice).to_have_attribute("aria-label", "The knowledge base has no answer to this")
        expect(answer.get_by_test_id("answer")).not_to_be_empty()
        toggle = answer.get_by_test_id("sources-toggle")
        expect(toggle).to_contain_text("Closest passages (not used)")
        sources = answer.get_by_test_id("source")
        assert sources.count() >= 1
        expect(sources.first).to_be_hidden()  # folded away until asked for
        toggle.click()
        expect(sources.first).to_be_visible()
        for index in range(sources.count()):
            expect(sources.nth(index)).to_have_attribute("data-support", "uncited")
        page.screenshot(path=str(output_dir / "chat-abstained.png"), full_page=True)

        # The same in Chinese on a phone-sized screen.
        page.set_viewport_size({"width": 390, "height": 844})
        page.get_by_test_id("lang-toggle").click()
        page.get_by_test_id("chat-input").fill("1998 年世界杯足球赛的冠军是谁？")
        page.get_by_test_id("chat-send").click()
        answer = page.get_by_test_id("assistant-message").last
        expect(answer).to_have_attribute("data-state", "done", timeout=60_000)
        expect(answer.get_by_test_id("abstained-notice")).to_have_attribute(
            "aria-label", "知识库中没有这个问题的答案"
        )
        expect(answer.get_by_test_id("sources-toggle")).to_contain_text("最接近的段落（未使用）")
        width = page.evaluate("() => document.documentElement.scrollWidth")
        assert width <= 390, f"chat page is {width}px wide on a 390px screen"
        page.screenshot(path=str(output_dir / "chat-abstained-narrow-zh.png"), full_page=True)
    finally:
        api.delete(f"/v1/knowledge_bases/{kb}")
