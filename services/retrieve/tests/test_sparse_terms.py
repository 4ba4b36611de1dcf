"""English stemming in the sparse encoder, and the compatibility it keeps with older indexes.

Documents are indexed by stems, queries carry stems and the words as written, so an inflected
question finds its passage in a new collection, and a collection whose chunks were indexed
before stemming (unstemmed words) still matches the question's words.
"""

from __future__ import annotations

import pytest

from services.common.sparse import SparseEncoder, query_terms, token_id, tokenize
from services.retrieve.tests.conftest import Running, make_point, point_id
from zhiku.v1 import retrieve_pb2 as pb

KB = "stems"
CHUNKS = [
    "The university was founded by monks in 1209 and grew quickly.",
    "Tea cultivation spread to the mountains of Fujian.",
    "Harbours of the region traded silk and porcelain.",
]


def test_english_words_are_stemmed_and_chinese_left_alone() -> None:
    assert tokenize("Cities founded 城市建立") == ["citi", "found", "城市", "建立"]
    # Mixed tokens (letters with digits or CJK) are identifiers: kept exactly.
    assert tokenize("ZX-9041 model3") == ["zx", "9041", "model3"]


def test_a_query_carries_the_stem_and_the_word() -> None:
    assert query_terms("founding cities") == ["found", "founding", "citi", "cities"]
    # A word that is its own stem is not repeated.
    assert query_terms("silk") == ["silk"]
    vector = SparseEncoder().query("founding")
    assert sorted(vector.indices) == sorted({token_id("found"), token_id("founding")})


@pytest.mark.parametrize("query", ["When was the university founding?", "who founds universities"])
async def test_an_inflected_question_finds_its_passage_by_sparse_search(
    retrieve: Running, query: str
) -> None:
    await retrieve.stub.EnsureCollection(pb.EnsureCollectionRequest(collection=KB, dimension=4))
    points = [
        make_point(n, [1.0, 0.5, 0.25, float(n + 1)], f"doc{n}.txt", text=text)
        for n, text in enumerate(CHUNKS)
    ]
    await retrieve.stub.Upsert(pb.UpsertRequest(collection=KB, points=points))
    request = pb.SearchRequest(collection=KB, query_text=query, mode=pb.SEARCH_MODE_SPARSE, top_k=3)
    hits = (await retrieve.stub.Search(request)).hits
    assert [hit.chunk_id for hit in hits][:1] == [point_id(0)]


def test_an_unstemmed_index_still_matches_the_words_as_written() -> None:
    """Chunks indexed before stemming hold the surface word; the query still names it."""
    old_document_terms = {token_id(word) for word in ["university", "founded", "monks"]}
    query = set(SparseEncoder().query("Which monks founded it?").indices)
    assert {token_id("founded"), token_id("monks")} <= query & old_document_terms


@pytest.mark.parametrize(
    "text",
    [
        "ZX-9041 model3 的 e-mail 地址",
        "增长了3.5倍, www.example.com 与 snake_case",
        "《战国无双3》是由光荣和ω-force开发的战国无双系列的正统第三续作。",
        "The university was founded by monks in 1209 and grew quickly.",
    ],
)
def test_rjieba_cuts_these_as_jieba_does(text: str) -> None:
    assert tokenize(text, "rjieba") == tokenize(text, "jieba")
    assert SparseEncoder(tokenizer="rjieba").document(text) == SparseEncoder(tokenizer="jieba").document(text)
