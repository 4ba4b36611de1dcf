"""Answer quality end to end: questions through the gateway's ``/v1/chat/completions``, per
generate backend, side by side in one run (``make bench-answers``).

Knowledge bases are real: every passage is one ``.txt`` file uploaded through the stack's HTTP
API (``cmrc-<article id>.txt``, ``squad-<hash>.txt``, so a citation's ``file_name`` says whether
it is the gold passage). Three of them: all 848 CMRC 2018 passages; the indexed half of the
CMRC articles (a hash of the article id picks the half); the 411 SQuAD 2.0 passages. They
live in the stack's data directory ``bench/.cache/answers-<embed model>/`` and are reused by
later runs (missing or failed files are uploaded again; e5 ingests ~1.5 passages/s on 2 cores).

For each backend the stack is started with that generate backend (nothing else differs),
every set is asked one request at a time, and the stack is stopped. The sets (test split by
default; ``--split dev`` is for tuning, never for reporting):

* **CMRC answerable**: a fixed sample of 400 questions against all 848 passages.
* **SQuAD answerable**: the split's half of the 242 answerable questions (the extractive budget
  and the English support rule were chosen on the dev half; ``--squad-questions all`` asks all)
  against the 411 passages.
* **Unanswerable**: CMRC questions of the held-out half against the half knowledge base
  (fixed sample of 300), next to 300 of the indexed half's questions against it (false
  abstention); the split's half of SQuAD's 258 unanswerable questions, next to its answerable ones.
* **Follow-ups**: two-turn conversations built from CMRC (``answer_sets.build_follow_ups``):
  [Q1, the stack's reply to Q1, Q2 with its subject replaced by 它 or left out], asked with
  the conversation-aware search (``rewrite: true``) and with the last message only
  (``rewrite: false``).

Each backend runs once per chunking mode (``--chunking``, both by default, side by side in
the tables): ``plain`` (the default splitter, 250/50) and ``parent-child`` (knowledge bases
``<name>-pc`` created with ``parent_child``: children of 125/25 characters are embedded and
matched, the prompt receives their parent section of at most 1500 characters, one per parent).
A reply's citation is the child, so "cited passage holds answer" checks the child's file.

LLM backends are slow here, so they answer the first ``--llm-limit`` (100) questions of each
set's sample; the extractive default is also reported on that same prefix, so rows compare
identical questions. Prints one Markdown table per set and writes every reply with its
judgement to ``bench/results/answers.json``. Never passes or fails.

    python -m bench.bench_answers [--backends extractive,llamacpp] [--gguf PATH] [--limit N]
        [--llm-limit M] [--split test|dev] [--embed-model e5|use] [--set ZHIKU_NAME=value ...]
        [--chunking plain,parent-child]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.answer_metrics import Judged, failed, judge, summary
from bench.answer_sets import (
    Article,
    Document,
    FollowUp,
    Question,
    Split,
    build_follow_ups,
    fixed_sample,
    load_cmrc,
    load_squad,
)
from bench.bench_embed import evaldata_dir
from launcher.stack import BackgroundStack, launch_in_background
from services.embed.config import EmbedSettings
from services.generate.config import bundled_gguf

REPO = Path(__file__).resolve().parents[1]
CMRC_SAMPLE = 400
HALF_SAMPLE = 300  # each of: held-out questions, indexed-half questions
KB_CMRC, KB_CMRC_HALF, KB_SQUAD = "bench-cmrc", "bench-cmrc-half", "bench-squad"
UPLOAD_BATCH = 25
REQUEST_TIMEOUT_S = 180.0  # one answer; the gateway's own generation deadline is 300 s
INGEST_TIMEOUT_S = 4 * 3600.0
MAX_ERRORS_IN_A_ROW = 20  # the stack is down, not one question hard


def say(message: str) -> None:
    print(f"[bench-answers] {message}", file=sys.stderr, flush=True)


# What is asked -----------------------------------------------------------------------------


@dataclass
class AskedSet:
    key: str
    title: str
    knowledge_base: str
    questions: list[Question]


@dataclass
class Plan:
    knowledge_bases: dict[str, list[Document]]
    sets: list[AskedSet]
    follow_ups: list[FollowUp]
    half_passages: int


def make_plan(split: Split, squad_questions: str, limit: int | None) -> Plan:
    root = evaldata_dir()
    if not root.is_dir():
        raise SystemExit(f"evaluation data not found at {root}; set ZHIKU_EVALDATA")
    articles = load_cmrc(root)
    squad = load_squad(root)
    indexed = [a for a in articles if a.half == "indexed"]
    held_out = [a for a in articles if a.half == "held_out"]

    def in_split(selected: Sequence[Article], gold_in_kb: bool) -> list[Question]:
        return [q for a in selected for q in a.asked(gold_in_kb) if q.split == split]

    def sample(questions: Sequence[Question], size: int | None) -> list[Question]:
        sizes = [s for s in (size, limit) if s is not None]
        return fixed_sample(questions, key=lambda q: q.id, size=min(sizes) if sizes else None)

    def squad_part(questions: list[Question]) -> list[Question]:
        return questions if squad_questions == "all" else [q for q in questions if q.split == split]

    sets = [
        AskedSet("cmrc", "CMRC 2018 answerable", KB_CMRC, sample(in_split(articles, True), CMRC_SAMPLE)),
        AskedSet("squad", "SQuAD 2.0 answerable", KB_SQUAD, sample(squad_part(squad.answerable), None)),
        AskedSet(
            "cmrc_held_out",
            "CMRC held-out half",
            KB_CMRC_HALF,
            sample(in_split(held_out, False), HALF_SAMPLE),
        ),
        AskedSet(
            "cmrc_indexed", "CMRC indexed half", KB_CMRC_HALF, sample(in_split(indexed, True), HALF_SAMPLE)
        ),
        AskedSet(
            "squad_unanswerable",
            "SQuAD 2.0 unanswerable",
            KB_SQUAD,
            sample(squad_part(squad.unanswerable), None),
        ),
    ]
    conversations = [c for c in build_follow_ups(articles) if c.second.split == split]
    follow_ups = fixed_sample(conversations, key=lambda c: c.id, size=limit)
    return Plan(
        {
            KB_CMRC: [a.document() for a in articles],
            KB_CMRC_HALF: [a.document() for a in indexed],
            KB_SQUAD: squad.documents,
        },
        sets,
        follow_ups,
        len(indexed),
    )


# How the knowledge bases are chunked ------------------------------------------------------


@dataclass(frozen=True)
class Chunking:
    """A chunking mode: its knowledge bases' name suffix, creation fields and upload fields."""

    name: str
    suffix: str
    create: dict[str, Any]
    upload: dict[str, str]

    def kb(self, base: str) -> str:
        return base + self.suffix


CHUNKINGS = {
    "plain": Chunking("plain", "", {}, {}),
    # Sizes fixed before the first run (children half the plain chunks), never tuned.
    "parent-child": Chunking(
        "parent-child",
        "-pc",
        {"parent_child": True, "parent_chunk_size": 1500},
        {"chunk_size": "125", "chunk_overlap": "25"},
    ),
}


def choose_chunkings(names: str) -> list[Chunking]:
    chosen = []
    for name in (n.strip() for n in names.split(",") if n.strip()):
        if name not in CHUNKINGS:
            raise SystemExit(f"unknown chunking {name!r}: {', '.join(CHUNKINGS)}")
        chosen.append(CHUNKINGS[name])
    return chosen


# Who answers -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Backend:
    label: str
    env: dict[str, str]
    is_llm: bool


def choose_backends(names: list[str], gguf: str | None, settings: dict[str, str]) -> list[Backend]:
    """The backends to run, each with ``settings`` (``--set``) added to its stack's environment."""
    chosen = []
    for name in names:
        if name == "extractive":
            chosen.append(Backend("extractive", {"ZHIKU_GENERATE_BACKEND": "extractive"}, False))
        elif name == "llamacpp":
            bundled = bundled_gguf()
            stem = bundled.stem if bundled else "bundled model"
            chosen.append(Backend(f"llamacpp bundled {stem}", {"ZHIKU_GENERATE_BACKEND": "llamacpp"}, True))
        elif name != "gguf":
            raise SystemExit(f"unknown backend {name!r}: extractive, llamacpp or gguf (with --gguf PATH)")
    if "gguf" in names or gguf:
        if not gguf:
            raise SystemExit("backend gguf needs --gguf PATH (or ZHIKU_BENCH_GGUF)")
        path = Path(gguf).expanduser().resolve()
        if not path.is_file():
            raise SystemExit(f"--gguf {path} is not a file")
        env = {"ZHIKU_GENERATE_BACKEND": "llamacpp", "ZHIKU_GENERATE_MODEL_PATH": str(path)}
        chosen.append(Backend(f"llamacpp {path.name}", env, True))  # never the bundled row's label
    return [Backend(b.label, {**b.env, **settings}, b.is_llm) for b in chosen]


def stack_settings(assignments: list[str]) -> dict[str, str]:
    """``--set ZHIKU_X=1`` pairs; only ``ZHIKU_*`` names (the stack drops nothing else's)."""
    settings = {}
    for assignment in assignments:
        name, sep, value = assignment.partition("=")
        if not sep or not name.startswith("ZHIKU_"):
            raise SystemExit(f"--set {assignment!r}: expected ZHIKU_NAME=value")
        settings[name] = value
    return settings


# The stack and its knowledge bases ---------------------------------------------------------


def ensure_knowledge_base(
    http: httpx.Client, name: str, documents: list[Document], chunking: Chunking = CHUNKINGS["plain"]
) -> int:
    """Make ``name`` hold exactly ``documents``, each ingested; returns the files uploaded."""
    if http.get(f"/v1/knowledge_bases/{name}").status_code == 404:
        http.post("/v1/knowledge_bases", json={"name": name, **chunking.create}).raise_for_status()
    wanted = {d.file_name: d for d in documents}

    def listed() -> dict[str, dict[str, Any]]:
        reply = http.get(f"/v1/knowledge_bases/{name}/files").raise_for_status()
        return {f["file_name"]: f for f in reply.json()["data"]}

    present = listed()
    for stray in present.keys() - wanted.keys():
        http.delete(f"/v1/knowledge_bases/{name}/files/{stray}").raise_for_status()
    missing = [
        d
        for d in documents
        if present.get(d.file_name, {}).get("state") != "succeeded"
        or present[d.file_name]["size"] != len(d.text.encode())
    ]
    if not missing:
        return 0
    say(f"{name}: {len(documents) - len(missing)} of {len(documents)} files ready; uploading {len(missing)}")
    for start in range(0, len(missing), UPLOAD_BATCH):
        batch = missing[start : start + UPLOAD_BATCH]
        form = [("files", (d.file_name, d.text.encode(), "text/plain")) for d in batch]
        http.post(f"/v1/knowledge_bases/{name}/files", files=form, data=chunking.upload).raise_for_status()
    deadline = time.monotonic() + INGEST_TIMEOUT_S
    last_note = time.monotonic()
    while True:
        files = listed()
        states = [files.get(n, {}).get("state", "queued") for n in wanted]
        bad = [n for n in wanted if files.get(n, {}).get("state") in ("failed", "cancelled")]
        if bad:
            raise RuntimeError(f"{name}: {len(bad)} files failed to ingest, e.g. {files[bad[0]]}")
        done = states.count("succeeded")
        if done == len(wanted):
            return len(missing)
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name}: only {done} of {len(wanted)} files ingested in time")
        if time.monotonic() - last_note > 60:
            say(f"{name}: {done} of {len(wanted)} files ingested")
            last_note = time.monotonic()
        time.sleep(2)


def launch(backend: Backend, data_dir: Path, embed_model: str | None) -> BackgroundStack:
    env = {**backend.env, "ZHIKU_LOG_LEVEL": "WARNING"}
    if embed_model:
        env["ZHIKU_EMBED_LOCAL_MODEL"] = embed_model
    log = REPO / "test-output" / "bench" / f"answers-{backend.label.replace(' ', '-')}.log"
    return launch_in_background(data_dir, log, env)


# Asking ------------------------------------------------------------------------------------


class Asker:
    """Sends knowledge-base chats one at a time and judges the replies."""

    def __init__(self, http: httpx.Client, chunking: Chunking = CHUNKINGS["plain"]) -> None:
        self.http = http
        self.chunking = chunking
        self.errors_in_a_row = 0

    def ask(
        self, question: Question, kb: str, history: Sequence[dict[str, str]] = (), rewrite: bool = True
    ) -> tuple[Judged, dict[str, Any]]:
        messages = [*history, {"role": "user", "content": question.text}]
        body: dict[str, Any] = {
            "model": "",
            "messages": messages,
            "knowledge_base": self.chunking.kb(kb),
            "stream": False,
        }
        if not rewrite:
            body["rewrite"] = False
        started = time.perf_counter()
        try:
            reply = self.http.post("/v1/chat/completions", json=body)
            latency = time.perf_counter() - started
            if reply.status_code != 200:
                raise RuntimeError(f"HTTP {reply.status_code}: {reply.text[:300]}")
            response = reply.json()
        except (httpx.HTTPError, RuntimeError, ValueError) as error:
            self.errors_in_a_row += 1
            if self.errors_in_a_row >= MAX_ERRORS_IN_A_ROW:
                raise RuntimeError(
                    f"{MAX_ERRORS_IN_A_ROW} requests failed in a row, last: {error}"
                ) from error
            return failed(question, str(error), time.perf_counter() - started), {}
        self.errors_in_a_row = 0
        return judge(question, response, latency), response

    def ask_all(self, asked: AskedSet, limit: int | None) -> list[Judged]:
        questions = asked.questions[:limit]
        say(f"  {asked.title}: {len(questions)} questions")
        return [self.ask(q, asked.knowledge_base)[0] for q in questions]

    def converse(self, conversations: Sequence[FollowUp], limit: int | None) -> list[dict[str, Judged]]:
        """Q1 alone, then [Q1, the reply to Q1, Q2] with and without the conversation-aware search."""
        out = []
        conversations = conversations[:limit]
        say(f"  follow-ups: {len(conversations)} conversations")
        for conversation in conversations:
            first, response = self.ask(conversation.first, KB_CMRC)
            reply = (response.get("choices") or [{}])[0].get("message", {}).get("content") or ""
            history = [
                {"role": "user", "content": conversation.first.text},
                {"role": "assistant", "content": reply},
            ]
            rewritten, _ = self.ask(conversation.second, KB_CMRC, history, rewrite=True)
            last_only, _ = self.ask(conversation.second, KB_CMRC, history, rewrite=False)
            out.append({"first": first, "rewrite": rewritten, "last_only": last_only})
        return out


@dataclass
class BackendRun:
    backend: Backend
    sets: dict[str, list[Judged]] = field(default_factory=dict)
    follow_ups: list[dict[str, Judged]] = field(default_factory=list)
    wall_s: float = 0.0


def run_backend(
    backend: Backend,
    plan: Plan,
    data_dir: Path,
    embed_model: str | None,
    limit: int | None,
    chunking: Chunking = CHUNKINGS["plain"],
) -> BackendRun:
    started = time.perf_counter()
    if chunking.name != "plain":
        backend = Backend(f"{backend.label}, {chunking.name}", backend.env, backend.is_llm)
    say(f"{backend.label}: starting the stack")
    stack = launch(backend, data_dir, embed_model)
    run = BackendRun(backend)
    try:
        with httpx.Client(base_url=stack.url, timeout=REQUEST_TIMEOUT_S) as http:
            for base, documents in plan.knowledge_bases.items():
                kb = chunking.kb(base)
                ingest_started = time.perf_counter()
                uploaded = ensure_knowledge_base(http, kb, documents, chunking)
                if uploaded:
                    say(f"{kb}: {uploaded} files ingested in {time.perf_counter() - ingest_started:.0f} s")
            asker = Asker(http, chunking)
            for asked in plan.sets:
                run.sets[asked.key] = asker.ask_all(asked, limit)
            run.follow_ups = asker.converse(plan.follow_ups, limit)
    finally:
        stack.stop()
    run.wall_s = time.perf_counter() - started
    say(f"{backend.label}: done in {run.wall_s:.0f} s")
    return run


# Reporting ---------------------------------------------------------------------------------


@dataclass
class Row:
    """One table row: a backend's replies, possibly cut to the LLMs' prefix."""

    label: str
    sets: dict[str, list[Judged]]
    follow_ups: list[dict[str, Judged]]


def rows_of(runs: list[BackendRun], llm_limit: int) -> list[Row]:
    rows = []
    has_llm = any(r.backend.is_llm for r in runs)
    for run in runs:
        rows.append(Row(run.backend.label, run.sets, run.follow_ups))
        if has_llm and not run.backend.is_llm:
            cut = {key: judged[:llm_limit] for key, judged in run.sets.items()}
            longer = [len(judged) for judged in run.sets.values()] + [len(run.follow_ups)]
            if max(longer) > llm_limit:
                label = f"{run.backend.label} (first {llm_limit})"
                rows.append(Row(label, cut, run.follow_ups[:llm_limit]))
    return rows


Column = tuple[str, Callable[[Row], float | int | None]]


def fmt(value: float | int | None, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, int):
        return str(value)
    return f"{value:.{digits}f}"


def markdown(title: str, rows: list[Row], columns: list[Column], digits: dict[str, int]) -> str:
    lines = [f"**{title}**", "", "| backend | " + " | ".join(h for h, _ in columns) + " |"]
    lines.append("|---" * (len(columns) + 1) + "|")
    for row in rows:
        cells = [fmt(pick(row), digits.get(header, 3)) for header, pick in columns]
        lines.append(f"| {row.label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def stat(key: str, metric: str) -> Callable[[Row], float | int | None]:
    return lambda row: summary(row.sets[key])[metric] if key in row.sets else None


def follow_stat(turn: str, metric: str) -> Callable[[Row], float | int | None]:
    return lambda row: summary([c[turn] for c in row.follow_ups])[metric] if row.follow_ups else None


def gain(row: Row) -> float | None:
    """Points the conversation-aware search adds to citing the gold passage."""
    with_rewrite = follow_stat("rewrite", "gold_cited")(row)
    last_only = follow_stat("last_only", "gold_cited")(row)
    if with_rewrite is None or last_only is None:
        return None
    return 100 * (with_rewrite - last_only)


def answer_columns(key: str) -> list[Column]:
    return [
        ("n", stat(key, "n")),
        ("answer in reply", stat(key, "answer_in_reply")),
        ("cited passage holds answer", stat(key, "cited_gold_holds_answer")),
        ("gold cited", stat(key, "gold_cited")),
        ("gold retrieved", stat(key, "gold_retrieved")),
        ("abstained", stat(key, "abstained")),
        ("question's language", stat(key, "question_language")),
        ("repeats a sentence", stat(key, "repeated_sentence")),
        ("has unsupported", stat(key, "with_unsupported")),
        ("check agrees", stat(key, "check_agrees")),
        ("mean chars", stat(key, "mean_chars")),
        ("p50 s", stat(key, "p50_s")),
        ("p99 s", stat(key, "p99_s")),
        ("errors", stat(key, "errors")),
    ]


def abstain_columns(unanswerable: str, answerable: str) -> list[Column]:
    return [
        ("n unanswerable", stat(unanswerable, "n")),
        ("abstained", stat(unanswerable, "abstained")),
        ("n answerable", stat(answerable, "n")),
        ("false abstention", stat(answerable, "abstained")),
        ("answer in reply (answerable)", stat(answerable, "answer_in_reply")),
        ("question's language", stat(unanswerable, "question_language")),
        ("p50 s", stat(unanswerable, "p50_s")),
        ("p99 s", stat(unanswerable, "p99_s")),
        (
            "errors",
            lambda row: sum(summary(row.sets.get(k, []))["errors"] for k in (unanswerable, answerable)),
        ),
    ]


FOLLOW_UP_COLUMNS: list[Column] = [
    ("n", lambda row: len(row.follow_ups)),
    ("gold cited (rewrite)", follow_stat("rewrite", "gold_cited")),
    ("gold cited (last message only)", follow_stat("last_only", "gold_cited")),
    ("gain (points)", gain),
    ("gold retrieved (rewrite)", follow_stat("rewrite", "gold_retrieved")),
    ("gold retrieved (last message only)", follow_stat("last_only", "gold_retrieved")),
    ("answer in reply (rewrite)", follow_stat("rewrite", "answer_in_reply")),
    ("answer in reply (last message only)", follow_stat("last_only", "answer_in_reply")),
    ("first turn: gold cited", follow_stat("first", "gold_cited")),
    ("p50 s (rewrite)", follow_stat("rewrite", "p50_s")),
    ("p99 s (rewrite)", follow_stat("rewrite", "p99_s")),
    (
        "errors",
        lambda row: sum(
            summary([c[t] for c in row.follow_ups])["errors"] for t in ("first", "rewrite", "last_only")
        ),
    ),
]
DIGITS = {
    "mean chars": 0,
    "p50 s": 2,
    "p99 s": 2,
    "gain (points)": 1,
    "p50 s (rewrite)": 2,
    "p99 s (rewrite)": 2,
}


def tables(rows: list[Row], plan: Plan, split: str) -> str:
    squad_kb = len(plan.knowledge_bases[KB_SQUAD])
    cmrc_kb = len(plan.knowledge_bases[KB_CMRC])
    parts = [
        markdown(
            f"CMRC 2018 answerable ({split} split; {cmrc_kb} passages indexed)",
            rows,
            answer_columns("cmrc"),
            DIGITS,
        ),
        markdown(
            f"SQuAD 2.0 answerable ({squad_kb} passages indexed)", rows, answer_columns("squad"), DIGITS
        ),
        markdown(
            f"Unanswerable: CMRC held-out half ({split} split) against the indexed half "
            f"({plan.half_passages} passages); false abstention on the indexed half's questions",
            rows,
            abstain_columns("cmrc_held_out", "cmrc_indexed"),
            DIGITS,
        ),
        markdown(
            "Unanswerable: SQuAD 2.0 unanswerable; false abstention on its answerable questions",
            rows,
            abstain_columns("squad_unanswerable", "squad"),
            DIGITS,
        ),
        markdown(
            f"Follow-ups: two-turn CMRC conversations ({split} split; {cmrc_kb} passages indexed), "
            "second question's subject replaced by 它 or left out",
            rows,
            FOLLOW_UP_COLUMNS,
            DIGITS,
        ),
    ]
    return "\n\n".join(parts)


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
        )
        return out.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def dump(path: Path, meta: dict[str, Any], runs: list[BackendRun], rows: list[Row], text: str) -> None:
    document = {
        "meta": meta,
        "tables": text,
        "summaries": {
            row.label: {
                **{key: summary(judged) for key, judged in row.sets.items()},
                **{
                    f"follow_ups_{turn}": summary([c[turn] for c in row.follow_ups])
                    for turn in ("first", "rewrite", "last_only")
                },
            }
            for row in rows
        },
        "runs": {
            run.backend.label: {
                "env": run.backend.env,
                "wall_s": run.wall_s,
                "sets": {key: [j.to_json() for j in judged] for key, judged in run.sets.items()},
                "follow_ups": [{turn: j.to_json() for turn, j in c.items()} for c in run.follow_ups],
            }
            for run in runs
        },
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, ensure_ascii=False, indent=1), encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backends", default="extractive,llamacpp", help="extractive, llamacpp, gguf")
    parser.add_argument(
        "--gguf",
        default=os.environ.get("ZHIKU_BENCH_GGUF") or None,
        help="adds 'llamacpp with this GGUF' [env ZHIKU_BENCH_GGUF]",
    )
    parser.add_argument("--split", choices=["test", "dev"], default="test", help="dev is for tuning only")
    parser.add_argument(
        "--squad-questions",
        choices=["all", "split"],
        default="split",
        help="split: only the --split half (the extractive budget and the English support rule "
        "were chosen on SQuAD's dev half); all: every SQuAD question",
    )
    parser.add_argument("--limit", type=int, default=None, help="questions per set (quick runs)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="ZHIKU_NAME=value",
        help="a stack setting for every backend (repeatable; for tuning runs on the dev split)",
    )
    parser.add_argument("--llm-limit", type=int, default=100, help="questions per set for LLM backends")
    parser.add_argument(
        "--chunking",
        default="plain,parent-child",
        help="chunking modes, each a row per backend: plain, parent-child (children 125/25, parents 1500)",
    )
    parser.add_argument("--embed-model", default=None, help="local embed model [default: the stack's]")
    parser.add_argument("--cache-dir", type=Path, default=REPO / "bench" / ".cache")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "answers.json")
    args = parser.parse_args()

    settings = stack_settings(args.set)
    names = [b.strip() for b in args.backends.split(",") if b.strip()]
    backends = choose_backends(names, args.gguf, settings)
    chunkings = choose_chunkings(args.chunking)
    plan = make_plan(args.split, args.squad_questions, args.limit)
    embed_model = args.embed_model or EmbedSettings.model_fields["local_model"].default
    data_dir = (args.cache_dir / f"answers-{embed_model}").resolve()
    meta = {
        "commit": git_commit(),
        "split": args.split,
        "embed_model": embed_model,
        "limit": args.limit,
        "llm_limit": args.llm_limit,
        "squad_questions": args.squad_questions,
        "settings": settings,
        "chunking": [c.name for c in chunkings],
        "load_average_start": os.getloadavg()[0],
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    say(
        f"{', '.join(b.label for b in backends)}; {args.split} split; embed {embed_model}; data {data_dir}; "
        f"sets: "
        + ", ".join(f"{s.key} {len(s.questions)}" for s in plan.sets)
        + f", follow-ups {len(plan.follow_ups)}"
    )
    runs = []
    for backend in backends:
        limit = min(args.llm_limit, args.limit or args.llm_limit) if backend.is_llm else args.limit
        for chunking in chunkings:
            runs.append(run_backend(backend, plan, data_dir, args.embed_model, limit, chunking))
    rows = rows_of(runs, args.llm_limit)
    text = tables(rows, plan, args.split)
    meta["load_average_end"] = os.getloadavg()[0]
    meta["wall_s"] = {run.backend.label: round(run.wall_s, 1) for run in runs}
    print(text)
    print(
        f"\ncommit {meta['commit']}; embed {embed_model}; load average {meta['load_average_start']:.1f} "
        f"at start, {meta['load_average_end']:.1f} at end; wall s: "
        + ", ".join(f"{label} {s:.0f}" for label, s in meta["wall_s"].items())
    )
    dump(args.out, meta, runs, rows, text)
    say(f"replies and judgements: {args.out}")


if __name__ == "__main__":
    main()
