"""The generated HTTP API page lists every route and method of the gateway's OpenAPI schema."""

from __future__ import annotations

from scripts.docsgen import api_page


def test_every_route_is_on_the_api_page() -> None:
    schema = api_page.openapi_schema()
    page = api_page.render(schema)
    routes = [
        (method, path)
        for path, item in schema["paths"].items()
        for method in item
        if method in api_page.METHODS
    ]
    assert len(routes) > 30
    missing = [f"{m.upper()} {p}" for m, p in routes if f"| `{m.upper()}` | `{p}` |" not in page]
    assert not missing, f"routes missing from the API page: {missing}"
