"""Chatchat v0.2 compatibility routes (``/knowledge_base/*``, ``/chat/*``): drop-in for its clients.

The file-chat pair (``upload_temp_docs``, ``/chat/file_chat``) lives with file chats, in
``services.gateway.file_chat.chatchat_routes``.
"""

from services.gateway.file_chat import chatchat_routes as file_chat
from services.gateway.routes.chatchat import agent_chat, chat, knowledge_base, search_engine_chat

routers = (
    knowledge_base.router,
    file_chat.upload_router,
    chat.router,
    file_chat.chat_router,
    agent_chat.router,
    search_engine_chat.router,
)
