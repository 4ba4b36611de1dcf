"""Parsing quality: is each answer in one chunk together with its column header or heading?

A retrieved chunk can only answer "what did SKU-6678 cost per unit?" if the row's value and
the column's name ("Unit Cost") are in it, and "what did the northern station record?" if the
sentence was read in column order. For every question in ``bench/data/parse_questions.json``
(written by reading the files: tables, two-column pages, headings, pictures of text) the file
is parsed and split with the real parser and splitter (no stack), and the question passes
when some chunk holds the answer and every ``with`` string (the chunk's heading path
counts). Table pipes and rules are ignored and whitespace collapsed, so a plain-text row and
a Markdown row compare alike.

Both layouts run in one process, printed side by side: ``off`` is the PDF text layer with
ruled tables only (the parser before the layout work), ``on`` adds column order, borderless
tables, font-based headings and OCR of pictures on text pages.

    python -m bench.bench_parse [--chunk-size 250] [--chunk-overlap 50] [--show-failures]
"""

from __future__ import annotations

import argparse
import json
import re
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from bench.parse_documents import load
from services.ingest.documents.parsers.base import DEFAULT_LIMITS
from services.ingest.documents.parsers.pdf import parse_pdf_pages
from services.ingest.documents.splitter import TextChunk, split_segments

QUESTIONS = Path(__file__).resolve().parent / "data" / "parse_questions.json"
_RULE = re.compile(r"\|\s*-{3,}\s*(?=\|)")


def comparable(text: str) -> str:
    return " ".join(_RULE.sub(" ", text).replace("|", " ").split())


@dataclass(frozen=True)
class Question:
    id: str
    file: str
    kind: str
    question: str
    answer: str
    with_: tuple[str, ...]


def load_questions(path: Path = QUESTIONS) -> list[Question]:
    raw = json.loads(path.read_text(encoding="utf-8"))["questions"]
    return [
        Question(q["id"], q["file"], q["kind"], q["question"], q["answer"], tuple(q["with"])) for q in raw
    ]


def answered(question: Question, chunks: list[TextChunk]) -> bool:
    answer = comparable(question.answer)
    needed = [comparable(text) for text in question.with_]
    for chunk in chunks:
        text = comparable(chunk.text + "\n" + chunk.metadata.get("heading", ""))
        if answer in text and all(part in text for part in needed):
            return True
    return False


def chunks_of(name: str, data: bytes, *, layout: bool, size: int, overlap: int) -> list[TextChunk]:
    segments = parse_pdf_pages(name, data, DEFAULT_LIMITS, layout=layout)
    return split_segments(segments, name, size, overlap)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--chunk-size", type=int, default=250, help="the ingest default")
    parser.add_argument("--chunk-overlap", type=int, default=50, help="the ingest default")
    parser.add_argument("--show-failures", action="store_true", help="list the questions each layout misses")
    args = parser.parse_args()

    questions = load_questions()
    files = sorted({q.file for q in questions})
    chunks: dict[tuple[str, bool], list[TextChunk]] = {}
    seconds: dict[bool, float] = defaultdict(float)
    missing = []
    for file in files:
        data = load(file)
        if data is None:
            missing.append(file)
            continue
        for layout in (False, True):
            started = time.perf_counter()
            chunks[file, layout] = chunks_of(
                file.partition(":")[2], data, layout=layout, size=args.chunk_size, overlap=args.chunk_overlap
            )
            seconds[layout] += time.perf_counter() - started
    asked = [q for q in questions if q.file not in missing]
    passed = {(q.id, layout): answered(q, chunks[q.file, layout]) for q in asked for layout in (False, True)}

    print(
        f"bench-parse: {len(asked)} questions over {len(files) - len(missing)} PDFs, "
        f"chunk_size {args.chunk_size}, overlap {args.chunk_overlap}"
    )
    for file in missing:
        print(f"  skipped (cannot be made here: evaluation data or LibreOffice missing): {file}")
    print()
    print(f"{'questions':<34} {'n':>3} {'layout off':>11} {'layout on':>10}")
    groups: dict[str, list[Question]] = defaultdict(list)
    for q in asked:
        groups[f"kind: {q.kind}"].append(q)
    for q in asked:
        groups[f"file: {q.file.partition(':')[2]}"].append(q)
    for label, members in [*sorted(groups.items()), ("all", asked)]:
        off = sum(passed[q.id, False] for q in members)
        on = sum(passed[q.id, True] for q in members)
        share_off, share_on = off / len(members), on / len(members)
        print(f"{label[:34]:<34} {len(members):>3} {off:>5} {share_off:>5.0%} {on:>4} {share_on:>5.0%}")
    print()
    print(
        f"parse + split time: layout off {seconds[False]:.2f} s, layout on {seconds[True]:.2f} s "
        f"(on includes OCR of pictures)"
    )
    if args.show_failures:
        for layout in (False, True):
            misses = [q for q in asked if not passed[q.id, layout]]
            print(f"\nmissed with layout {'on' if layout else 'off'}:")
            for q in misses:
                print(
                    f"  {q.id} {q.file.partition(':')[2]}: {q.question} -> {q.answer!r} with {list(q.with_)}"
                )


if __name__ == "__main__":
    main()
