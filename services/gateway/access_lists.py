"""People in a file's access list may be named by email, as when sharing a knowledge base.

The vector payloads hold ``user:<id>`` tokens, so an email stored as given would match nobody
and silently lock the person out. An editor who restricts a file cannot list users (that is
for admins), so the gateway turns emails into ids here, for the upload's ``access`` field and
``PUT .../files/{file}/access`` alike; an email nobody has is a 422 naming it.
"""

from __future__ import annotations

from services.gateway.errors import HttpApiError
from services.gateway.schemas.native import FileAccess
from services.gateway.store import GatewayStore


async def with_user_ids(store: GatewayStore, access: FileAccess) -> FileAccess:
    """``access`` with every email among its users replaced by that user's id (order kept)."""
    if not any("@" in entry for entry in access.users):
        return access
    users: list[str] = []
    for entry in access.users:
        if "@" not in entry:
            users.append(entry)
            continue
        user = await store.run(store.users.find_by_email, entry)
        if user is None:
            raise HttpApiError(422, f"access: no user has the email {entry!r}", param="access")
        users.append(user.id)
    return FileAccess(users=list(dict.fromkeys(users)), groups=access.groups)
