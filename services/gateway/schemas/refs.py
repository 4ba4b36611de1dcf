"""The OpenAPI extension that marks fields referring to something a key may not be allowed to see.

Apart from the models so both the native and the OpenAI shapes (and route parameters) can mark
their fields without importing each other.
"""

from __future__ import annotations

from pydantic.config import JsonDict

# OpenAPI extension on every field and parameter that refers to something a key may not be
# allowed to see (a knowledge base, a file chat, a conversation...). It documents the field,
# and the scope test walks the schema by it, so a new field is tested without editing the test.
REF_EXTENSION = "x-zhiku-refers-to"
KB_REF: JsonDict = {REF_EXTENSION: "knowledge_base"}
KBS_REF: JsonDict = {REF_EXTENSION: "knowledge_bases"}
MODEL_REF: JsonDict = {REF_EXTENSION: "model"}  # a model id, where "kb:<name>" names a knowledge base
FILE_CHAT_REF: JsonDict = {REF_EXTENSION: "file_chat"}
CONVERSATION_REF: JsonDict = {REF_EXTENSION: "conversation"}
MESSAGE_REF: JsonDict = {REF_EXTENSION: "message"}
JOB_REF: JsonDict = {REF_EXTENSION: "job"}
