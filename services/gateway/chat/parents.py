"""Parent-child chunks at answer time: one passage per parent, the parent's text in the prompt.

Children are matched (small chunks match precisely) but the answer needs their context, so
the generate service receives the parent section instead of the child. Several children of
one parent often come back together; only the best-scored one is kept, so the prompt never
repeats a section and the answer's citation numbers still match the (child) citations one to
one. Plain chunks pass through unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

from zhiku.v1 import common_pb2


def one_per_parent(passages: Sequence[common_pb2.Passage]) -> list[common_pb2.Passage]:
    """The passages in order, minus any child whose parent an earlier (better) one shares."""
    seen: set[tuple[str, str, str]] = set()
    kept: list[common_pb2.Passage] = []
    for passage in passages:
        if passage.parent_id:
            key = (passage.knowledge_base, passage.file_name, passage.parent_id)
            if key in seen:
                continue
            seen.add(key)
        kept.append(passage)
    return kept


def prompt_passages(passages: Sequence[common_pb2.Passage]) -> list[common_pb2.Passage]:
    """What the prompt reads: each child replaced by its parent section's text."""
    prompt: list[common_pb2.Passage] = []
    for passage in passages:
        if passage.parent_id and passage.parent_text:
            copy = common_pb2.Passage()
            copy.CopyFrom(passage)
            copy.text = passage.parent_text
            prompt.append(copy)
        else:
            prompt.append(passage)
    return prompt
