"""A file access list as a request gives it, checked against the gateway's people.

Access lists name users by id (an email is accepted and stored as the user's id) and groups
by name; a name that matches nobody is refused with a 422 naming it, rather than stored as a
list that can never open the file to anyone it meant to.
"""

from __future__ import annotations

from services.gateway.errors import HttpApiError
from services.gateway.schemas.native import FileAccess
from services.gateway.store import GatewayStore


def _resolve(store: GatewayStore, access: FileAccess) -> FileAccess:
    """Blocking (store queries): the list with every user as an id; 422 for unknown names."""
    users: list[str] = []
    for entry in access.users:
        user = store.users.get(entry) or (store.users.find_by_email(entry) if "@" in entry else None)
        if user is None:
            raise HttpApiError(422, f"access: user {entry!r} does not exist", param="access")
        users.append(user.id)
    for group in access.groups:
        if store.groups.get(group) is None:
            raise HttpApiError(422, f"access: group {group!r} does not exist", param="access")
    return FileAccess(users=list(dict.fromkeys(users)), groups=list(dict.fromkeys(access.groups)))


async def resolve_access(store: GatewayStore, access: FileAccess) -> FileAccess:
    """The list with users as ids, every name known (else a 422 naming it)."""
    return await store.run(_resolve, store, access)
