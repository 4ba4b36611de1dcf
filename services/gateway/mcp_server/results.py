"""Structured results of the MCP tools: their output schemas and their readable text.

Each result is a pydantic model (the tool's ``outputSchema``, returned as
``structuredContent``) that also renders itself as text for clients and models that read
only the text content.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from services.gateway.retrieval import file_content_url
from services.gateway.routes.conversations import UnsupportedSentence
from services.gateway.schemas.native import KnowledgeBase
from zhiku.v1 import common_pb2

# Longest excerpt of a passage the readable text shows (the structured result has it whole).
TEXT_EXCERPT_CHARS = 400


def _excerpt(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= TEXT_EXCERPT_CHARS else flat[: TEXT_EXCERPT_CHARS - 1] + "…"


class KnowledgeBaseListing(BaseModel):
    knowledge_bases: list[KnowledgeBase] = Field(description="the knowledge bases this caller may use")

    def text(self) -> str:
        if not self.knowledge_bases:
            return "No knowledge bases are available to this caller."
        lines = [f"{len(self.knowledge_bases)} knowledge base(s):"]
        for kb in self.knowledge_bases:
            about = f": {kb.description}" if kb.description else ""
            lines.append(f"- {kb.name} ({kb.file_count} files, {kb.chunk_count} chunks){about}")
        return "\n".join(lines)


class FoundPassage(BaseModel):
    knowledge_base: str
    file_name: str
    chunk_id: str
    chunk_index: int
    score: float = Field(description="similarity in [0, 1], higher is better")
    text: str
    metadata: dict[str, str]
    url: str = Field(description="where the original file is downloaded (path on the gateway)")

    @classmethod
    def from_pb(cls, passage: common_pb2.Passage) -> FoundPassage:
        return cls(
            knowledge_base=passage.knowledge_base,
            file_name=passage.file_name,
            chunk_id=passage.chunk_id,
            chunk_index=passage.chunk_index,
            score=round(passage.score, 6),
            text=passage.text,
            metadata=dict(passage.metadata),
            url=file_content_url(passage.knowledge_base, passage.file_name),
        )


class PassageSearch(BaseModel):
    query: str
    knowledge_bases: list[str]
    mode: str
    hits: list[FoundPassage] = Field(description="best first")

    def text(self) -> str:
        searched = ", ".join(self.knowledge_bases)
        if not self.hits:
            return f"No passages found in {searched} for {self.query!r}."
        lines = [f"{len(self.hits)} passage(s) from {searched} for {self.query!r} ({self.mode}):"]
        for rank, hit in enumerate(self.hits, start=1):
            lines.append(
                f"[{rank}] {hit.file_name} in {hit.knowledge_base} "
                f"(score {hit.score:.3f}): {_excerpt(hit.text)}"
            )
        return "\n".join(lines)


class Citation(BaseModel):
    index: int = Field(description="the number the answer cites it by, [1], [2]...")
    file_name: str
    chunk_id: str
    score: float = Field(description="similarity in [0, 1], higher is better")
    text: str
    url: str = Field(description="where the original file is downloaded (path on the gateway)")
    cited: bool = Field(default=False, description="the answer cites this passage")
    supported: bool = Field(default=False, description="the passage backs what the answer says with it")


class Answer(BaseModel):
    answer: str
    knowledge_bases: list[str]
    abstained: bool = Field(description="the passages cannot answer the question and the answer says so")
    retrieval_query: str = Field(description="what was searched")
    citations: list[Citation]
    unsupported: list[UnsupportedSentence] = Field(
        default_factory=list, description="sentences of the answer no passage backs"
    )

    def text(self) -> str:
        lines = [self.answer.strip() or "(empty answer)"]
        if self.citations:
            lines.append("")
            lines.append("Sources:")
            for cite in self.citations:
                lines.append(f"[{cite.index}] {cite.file_name} ({cite.url}): {_excerpt(cite.text)}")
        return "\n".join(lines)


class FileContent(BaseModel):
    knowledge_base: str
    file_name: str
    content_type: str
    size: int = Field(description="bytes of the original file")
    url: str = Field(description="where the original file is downloaded (path on the gateway)")
    text: str | None = Field(
        default=None, description="the file's text from offset (text files only; null otherwise)"
    )
    offset: int = Field(default=0, description="character offset of text in the whole text")
    total_chars: int | None = Field(default=None, description="characters in the whole text")
    next_offset: int | None = Field(default=None, description="offset of the next page; null at the end")
    chunks: list[FoundPassage] = Field(
        default_factory=list, description="with query: the file's indexed chunks that match it, best first"
    )

    def text_view(self) -> str:
        head = f"{self.file_name} in {self.knowledge_base} ({self.content_type}, {self.size} bytes)"
        parts = [head]
        if self.text is not None:
            end = self.offset + len(self.text)
            parts.append(f"characters {self.offset}-{end} of {self.total_chars}:")
            parts.append(self.text)
            if self.next_offset is not None:
                parts.append(f"… more from offset {self.next_offset}")
        for rank, chunk in enumerate(self.chunks, start=1):
            parts.append(f"[{rank}] chunk {chunk.chunk_index} (score {chunk.score:.3f}): {chunk.text}")
        return "\n".join(parts)
