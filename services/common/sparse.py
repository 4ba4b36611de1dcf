"""The sparse lexical encoder: BM25 term-frequency weights over jieba/word tokens.

One model for both languages. Text is NFKC-normalised and lowercased, then cut by jieba in
search mode (long Chinese words also emit their sub-words, so "错误码" matches "错误"):
by default rjieba (jieba-rs, the Rust port with jieba's dictionary), which cuts a CMRC
passage in 0.09 ms of CPU against 1.8 ms for Python's jieba, the retrieve service's largest
cost per ingested chunk, with CMRC retrieval recall within 0.5 points of it (see
docs/benchmarks/ingestion.md); ``tokenizer="jieba"`` keeps Python's jieba. The two cut
most text identically and differ on some unknown words (their HMM steps differ), so a
collection indexed with one still answers queries cut by the other, slightly less exactly;
reindex after switching for exact agreement.
jieba passes Latin runs through as whole words, so English gets a plain word tokenizer for
free. Tokens without a letter, digit or CJK character (punctuation, spaces) and a short
stop-word list are dropped. English words (tokens of ASCII letters only) are reduced to their
Snowball stem, as Qdrant's own BM25 does, so "founded" finds "founding" and "cities" finds
"city" (on the SQuAD sample this lifts sparse recall@5 from 0.967 to 0.979). Queries carry
both the stem and the word as written: collections indexed before stemming existed hold
unstemmed words and keep matching them, and in a stemmed collection the extra word matches
nothing (documents only hold stems) unless it happens to be another word's stem.

Token ids are ``zlib.crc32(token)``: stable across processes, machines and releases (no
vocabulary file, unlike Python's salted ``hash``), and inside Qdrant's u32 index space. A
collision merges two tokens' weights; at 2^32 ids it is rare enough not to matter.

Documents carry the BM25 term-frequency part, ``tf * (k1 + 1) / (tf + k1 * (1 - b + b *
len / avg_len))`` with a fixed ``avg_len`` (as Qdrant's own BM25 does: the true average is
not known when a chunk is written). Queries carry 1.0 per distinct token. The inverse
document frequency is applied by the engine at search time from live collection statistics:
both backends declare the sparse vector with the IDF modifier, so a score is
``sum over shared tokens of idf(t) * tf_part(t)``, i.e. BM25.

Document vectors are computed by the writers (the ingest worker, the benchmark writer), not
by the retrieve service: cutting and weighting a chunk holds the GIL for about a tenth of a
millisecond, and a retrieve process doing it for every ingested chunk made searches wait. The
retrieve service stays the one place the settings live: EnsureCollection answers its
encoder's :attr:`SparseEncoder.spec`, a writer builds the same encoder with
:meth:`SparseEncoder.from_spec` and sends the vectors with that spec, and the service uses
them only when the spec is its own (else it encodes the text itself, as for writers that send
none). That is why this module lives in services/common: writers import only common code.
"""

from __future__ import annotations

import functools
import importlib.metadata
import logging
import math
import re
import threading
import unicodedata
import zlib
from collections import Counter
from dataclasses import dataclass
from typing import Literal, cast, get_args

import jieba
import rjieba
import snowballstemmer

Tokenizer = Literal["rjieba", "jieba"]

# Name of the sparse vector in every collection that has one.
SPARSE = "sparse"

_ENGLISH_WORD = re.compile(r"[a-z]+")
_WORDLIKE = re.compile(r"[0-9a-z\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_STOPWORDS = frozenset(
    [
        "的",
        "了",
        "是",
        "在",
        "和",
        "与",
        "及",
        "或",
        "也",
        "就",
        "都",
        "而",
        "但",
        "并",
        "被",
        "把",
        "对",
        "于",
        "之",
        "其",
        "这",
        "那",
        "个",
        "么",
        "吗",
        "呢",
        "吧",
        "啊",
        "着",
        "过",
        "从",
        "为",
        "以",
        "等",
        "a",
        "an",
        "the",
        "of",
        "to",
        "in",
        "on",
        "at",
        "by",
        "for",
        "and",
        "or",
        "is",
        "are",
        "was",
        "were",
        "be",
        "been",
        "it",
        "its",
        "this",
        "that",
        "as",
        "with",
        "from",
        "do",
        "does",
        "did",
        "what",
        "which",
        "who",
        "whom",
        "how",
        "why",
        "when",
        "where",
    ]
)
_stemmers = threading.local()  # a Snowball stemmer keeps state between calls: one per thread
_init_lock = threading.Lock()
_initialised = False


@dataclass(frozen=True, slots=True)
class SparseVector:
    indices: list[int]
    values: list[float]

    def __bool__(self) -> bool:
        return bool(self.indices)


def _ensure_jieba() -> None:
    """Load jieba's dictionary once (about a second), not inside the first request's deadline."""
    global _initialised
    with _init_lock:
        if not _initialised:
            jieba.setLogLevel(logging.WARNING)
            jieba.initialize()
            _initialised = True


# jieba-rs keeps a Latin run with "-", "_", "&" or "." in it as one word ("zx-9041", "e-mail")
# where jieba cuts it apart, so a search for "9041" would miss "ZX-9041". Spaced out first,
# these cut as in jieba; a "." between digits stays ("3.5", as jieba keeps it). With this
# the words (after the filters below) are jieba's for 826 of 848 CMRC passages and 409 of
# 411 SQuAD ones; the rest differ on unknown Chinese words (the two HMM steps differ).
_GLUED = re.compile(r"([_\-&]|(?<![0-9])\.|\.(?![0-9]))")


def _cut(text: str, tokenizer: Tokenizer) -> list[str]:
    if tokenizer == "rjieba":
        cut: list[str] = rjieba.cut_for_search(_GLUED.sub(r" \1 ", text))
        return cut
    _ensure_jieba()
    return list(jieba.cut_for_search(text))


def _words(text: str, tokenizer: Tokenizer = "rjieba") -> list[str]:
    """Lowercased word tokens (jieba search mode), punctuation and stop words removed."""
    normal = unicodedata.normalize("NFKC", text).lower()
    return [
        token
        for raw in _cut(normal, tokenizer)
        if (token := raw.strip()) and _WORDLIKE.search(token) and token not in _STOPWORDS
    ]


def _stem(word: str) -> str:
    if not _ENGLISH_WORD.fullmatch(word):
        return word
    stemmer = getattr(_stemmers, "english", None)
    if stemmer is None:
        stemmer = _stemmers.english = snowballstemmer.stemmer("english")
    stemmed: str = stemmer.stemWord(word)
    return stemmed


def tokenize(text: str, tokenizer: Tokenizer = "rjieba") -> list[str]:
    """The document's index terms: words, English ones stemmed."""
    return [_stem(word) for word in _words(text, tokenizer)]


def query_terms(text: str, tokenizer: Tokenizer = "rjieba") -> list[str]:
    """A question's terms: each word's stem, plus the word itself where they differ."""
    terms = []
    for word in _words(text, tokenizer):
        stem = _stem(word)
        terms.append(stem)
        if stem != word:
            terms.append(word)
    return terms


def token_id(token: str) -> int:
    return zlib.crc32(token.encode("utf-8"))


@functools.lru_cache(maxsize=262_144)
def _document_term(raw: str) -> int | None:
    """The index term id of one cut token (None: dropped), exactly as ``tokenize`` and
    ``token_id`` make it. Cached: a corpus repeats its words, and with the Rust cutter the
    per-token Python work (filter, stem, hash) was most of a chunk's sparse vector."""
    token = raw.strip()
    if not token or not _WORDLIKE.search(token) or token in _STOPWORDS:
        return None
    return token_id(_stem(token))


# Version of what this module does to a text (normalising, filters, stop words, stemming,
# token ids, the weight formula). Bump it with any change that alters a document vector for
# the same settings and libraries, so writers and the retrieve service of different releases
# see different specs and the service encodes such points itself instead of storing vectors
# its queries no longer match.
SPEC_VERSION = "bm25/v1"
_SPEC_KEYS = ("tokenizer", "stemmer", "k1", "b", "avg_len")
_TOKENIZER_PACKAGES: dict[str, str] = {"rjieba": "rjieba", "jieba": "jieba"}
_encoders: dict[str, SparseEncoder] = {}
_encoders_lock = threading.Lock()


@functools.cache
def _package_version(package: str) -> str:
    """The installed version of a package whose behaviour changes the cut or the stems: a
    writer with another release of it would make other terms from the same text."""
    return importlib.metadata.version(package)


def _tokenizer_label(tokenizer: Tokenizer) -> str:
    return f"{tokenizer}-{_package_version(_TOKENIZER_PACKAGES[tokenizer])}"


def _stemmer_label() -> str:
    return f"snowball-{_package_version('snowballstemmer')}"


class SparseEncoder:
    """BM25-style encoder; ``k1``/``b`` are the usual BM25 constants, ``avg_len`` in tokens."""

    def __init__(
        self, k1: float = 1.2, b: float = 0.75, avg_len: float = 120.0, tokenizer: Tokenizer = "rjieba"
    ) -> None:
        if not (0 <= k1 < math.inf and 0 <= b <= 1 and 0 < avg_len < math.inf):  # NaN fails too
            raise ValueError("BM25 needs finite k1 >= 0, 0 <= b <= 1, finite avg_len > 0")
        self.k1, self.b, self.avg_len = k1, b, avg_len
        if tokenizer not in get_args(Tokenizer):
            raise ValueError(f"unknown tokenizer {tokenizer!r}: one of {', '.join(get_args(Tokenizer))}")
        self.tokenizer = tokenizer
        # Everything that changes a document vector, in one comparable string: EnsureCollection
        # hands it to writers, points come back with it (see the module docstring). Floats as
        # repr, the shortest text that reads back to the same float.
        self.spec = (
            f"{SPEC_VERSION} tokenizer={_tokenizer_label(tokenizer)} stemmer={_stemmer_label()}"
            f" k1={float(k1)!r} b={float(b)!r} avg_len={float(avg_len)!r}"
        )
        # Load the dictionary now (about a second for jieba), not inside the first request.
        _cut("预热", tokenizer)

    @classmethod
    def from_spec(cls, spec: str) -> SparseEncoder:
        """The encoder ``spec`` (a :attr:`spec`) describes, built once per spec and process
        (building one loads a dictionary). ValueError when this process cannot make exactly
        those vectors: another spec version, an unknown or malformed field, or other
        tokenizer or stemmer releases than the ones installed here."""
        found = _encoders.get(spec)
        if found is not None:
            return found
        version, _, rest = spec.partition(" ")
        if version != SPEC_VERSION:
            raise ValueError(f"sparse encoder spec {spec!r}: version {version!r} is not {SPEC_VERSION!r}")
        fields: dict[str, str] = {}
        for item in rest.split(" "):
            key, sep, value = item.partition("=")
            if not sep or key not in _SPEC_KEYS or key in fields or not value:
                raise ValueError(f"sparse encoder spec {spec!r}: malformed or unknown field {item!r}")
            fields[key] = value
        missing = [key for key in _SPEC_KEYS if key not in fields]
        if missing:
            raise ValueError(f"sparse encoder spec {spec!r}: missing {', '.join(missing)}")
        tokenizer = fields["tokenizer"].rpartition("-")[0]
        if tokenizer not in _TOKENIZER_PACKAGES:
            raise ValueError(f"sparse encoder spec {spec!r}: unknown tokenizer {fields['tokenizer']!r}")
        try:
            k1, b, avg_len = float(fields["k1"]), float(fields["b"]), float(fields["avg_len"])
        except ValueError:
            raise ValueError(f"sparse encoder spec {spec!r}: k1, b and avg_len must be numbers") from None
        with _encoders_lock:
            found = _encoders.get(spec)
            if found is None:
                try:
                    built = cls(k1, b, avg_len, cast(Tokenizer, tokenizer))  # a name checked above
                except ValueError as error:
                    raise ValueError(f"sparse encoder spec {spec!r}: {error}") from None
                if built.spec != spec:
                    # Other library releases here, or a number not written as repr writes it.
                    raise ValueError(f"sparse encoder spec {spec!r}: this process encodes as {built.spec!r}")
                found = _encoders[spec] = built
        return found

    def _counts(self, tokens: list[str]) -> dict[int, int]:
        counts: Counter[int] = Counter(token_id(token) for token in tokens)
        return dict(sorted(counts.items()))

    def document(self, text: str) -> SparseVector:
        normal = unicodedata.normalize("NFKC", text).lower()
        terms = [term for raw in _cut(normal, self.tokenizer) if (term := _document_term(raw)) is not None]
        norm = self.k1 * (1.0 - self.b + self.b * len(terms) / self.avg_len)
        counts = dict(sorted(Counter(terms).items()))
        values = [tf * (self.k1 + 1.0) / (tf + norm) for tf in counts.values()]
        return SparseVector(list(counts), values)

    def query(self, text: str) -> SparseVector:
        counts = self._counts(query_terms(text, self.tokenizer))
        return SparseVector(list(counts), [1.0] * len(counts))
