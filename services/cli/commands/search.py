"""``zhiku search "query" --kb NAME``: the retrieval step alone, hits with their scores."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer

from services.cli import render
from services.cli.context import current, reports_errors


class Mode(StrEnum):
    hybrid = "hybrid"
    dense = "dense"
    sparse = "sparse"


@reports_errors
def search(
    ctx: typer.Context,
    query: Annotated[str, typer.Argument(help="what to look for", show_default=False)],
    kb: Annotated[str, typer.Option("--kb", help="knowledge base to search", show_default=False)],
    top_k: Annotated[int | None, typer.Option("--top-k", "-k", min=1, max=100, help="hits to return")] = None,
    score_threshold: Annotated[
        float, typer.Option("--score-threshold", min=0.0, max=1.0, help="keep hits with score >= this")
    ] = 0.0,
    mode: Annotated[Mode, typer.Option("--mode", help="dense, sparse (BM25) or both fused")] = Mode.hybrid,
    rerank: Annotated[bool, typer.Option("--rerank", help="rerank with the embed service")] = False,
) -> None:
    """Search a knowledge base; scores are similarities in [0, 1], higher is better."""
    state = current(ctx)
    with state.client() as client:
        hits = client.search(
            kb,
            query,
            top_k=top_k,
            score_threshold=score_threshold,
            mode=mode.value,
            rerank=rerank or None,
        )
    if not hits:
        state.console.print("No hits.")
        return
    state.console.print(render.hits_table(kb, query, hits))
