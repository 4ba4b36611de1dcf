"""Chatchat v0.2 compatibility routes (``/knowledge_base/*``, ``/chat/*``): drop-in for its clients."""

from services.gateway.routes.chatchat import chat, file_chat, knowledge_base

routers = (knowledge_base.router, file_chat.upload_router, chat.router, file_chat.chat_router)
