"""Pages of the documentation site that are generated from the code, so they cannot go stale.

``settings_page`` writes the configuration reference from the pydantic-settings classes,
``api_page`` the HTTP API reference from the gateway's OpenAPI schema, and ``hooks`` is the
MkDocs hook (named in mkdocs.yml) that adds both to the site at build time.
"""
