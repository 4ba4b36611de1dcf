"""Cuts a model's answer short when it starts to repeat itself.

Small models loop: asked "What is AutoGen?", the bundled SmolLM2 wrote the same heading thirty
times. The sampler's repetition penalty (``ZHIKU_GENERATE_REPEAT_PENALTY``) makes that rarer;
this guard makes it harmless, for every backend:

- a sentence the answer already said ends the answer, and is never sent: while the sentence
  being written could still turn out to be a repeat (it matches the start of an earlier one),
  it is held back; as soon as it differs it streams on, so the first sentence (which cannot
  repeat anything) costs no latency at all;
- a phrase looping inside one sentence ("Building and Building and ...") ends it too, once the
  last stretch of text has already occurred ``LOOP_COUNT`` times in the recent text.
"""

from __future__ import annotations

import re

from services.generate.lexical import normalized, without_citations

_SENTENCE_END = frozenset("。！？；!?;\n")
_NOISE = re.compile(r"[\s\W_]+")
# Shorter sentences ("Yes.", "1.") may honestly recur.
MIN_SENTENCE_CHARS = 6
LOOP_WINDOW = 24
LOOP_COUNT = 3
LOOP_HISTORY = 600


def _key(sentence: str) -> str:
    return _NOISE.sub("", normalized(without_citations(sentence)))


class RepetitionGuard:
    def __init__(self) -> None:
        self.said: set[str] = set()
        self.sentence = ""
        self.sent = 0  # characters of ``sentence`` already let through
        self.recent = ""
        self.stopped = False

    def _might_repeat(self) -> bool:
        key = _key(self.sentence)
        return any(earlier.startswith(key) for earlier in self.said)

    def _looping(self) -> bool:
        tail = _key(self.recent[-LOOP_WINDOW * 2 :])[-LOOP_WINDOW:]
        return len(tail) == LOOP_WINDOW and _key(self.recent).count(tail) >= LOOP_COUNT

    def feed(self, delta: str) -> str:
        """The part of ``delta`` to send now; after a repeat, nothing more (``stopped``)."""
        out: list[str] = []
        for char in delta:
            if self.stopped:
                break
            self.sentence += char
            self.recent = (self.recent + char)[-LOOP_HISTORY:]
            ended = char in _SENTENCE_END or (char == " " and self.sentence.rstrip().endswith("."))
            if ended:
                key = _key(self.sentence)
                if len(key) >= MIN_SENTENCE_CHARS and key in self.said:
                    self.stopped = True
                    break
                if key:
                    self.said.add(key)
                out.append(self.sentence[self.sent :])
                self.sentence, self.sent = "", 0
            elif len(self.recent) % 8 == 0 and self._looping():
                self.stopped = True
                break
            elif not self._might_repeat():
                out.append(self.sentence[self.sent :])
                self.sent = len(self.sentence)
        return "".join(out)

    def flush(self) -> str:
        """What is still held back, at the end of the answer (unless it only repeats)."""
        if self.stopped:
            return ""
        key = _key(self.sentence)
        rest = "" if len(key) >= MIN_SENTENCE_CHARS and key in self.said else self.sentence[self.sent :]
        self.sentence, self.sent = "", 0
        return rest
