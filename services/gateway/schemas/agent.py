"""``POST /v1/agent/completions``'s request: OpenAI's chat request, minus the client's own
tools (the server's tools run here), plus which of them to offer and where to search."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from services.gateway.schemas.openai import ChatMessageIn, StreamOptions
from services.gateway.schemas.refs import CONVERSATION_REF, KBS_REF, MODEL_REF

MAX_STEPS = 20
MAX_KNOWLEDGE_BASES = 10


class AgentCompletionRequest(BaseModel):
    """The conversation, the model that drives the tools, and the run's bounds."""

    model_config = ConfigDict(
        extra="ignore",
        json_schema_extra={
            "examples": [
                {
                    "model": "default",
                    "messages": [
                        {"role": "user", "content": "How many annual leave days do 3 people get in total?"}
                    ],
                    "knowledge_bases": ["handbook"],
                    "stream": True,
                }
            ]
        },
    )

    model: str = Field(default="", json_schema_extra=MODEL_REF)
    messages: list[ChatMessageIn] = Field(min_length=1)
    tools: list[str] | None = Field(
        default=None,
        description="names of the deployment's enabled tools to offer (GET /v1/agent/tools); default: all",
    )
    knowledge_bases: list[str] = Field(
        default_factory=list,
        max_length=MAX_KNOWLEDGE_BASES,
        description="searched by search_knowledge_base when the model names none",
        json_schema_extra=KBS_REF,
    )
    max_steps: int | None = Field(
        default=None, ge=1, le=MAX_STEPS, description="tool rounds before the model must answer"
    )
    temperature: float | None = Field(default=None, ge=0, le=2)
    max_tokens: int | None = Field(default=None, ge=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    conversation_id: str | None = Field(
        default=None,
        max_length=64,
        description="continue a stored conversation; the run's steps are stored in it",
        json_schema_extra=CONVERSATION_REF,
    )

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)
