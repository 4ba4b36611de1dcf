"""MkDocs hook (mkdocs.yml ``hooks:``): adds the generated reference pages at build time.

``reference/configuration.md`` comes from the Settings classes, ``reference/api.md`` and
``reference/openapi.json`` from the gateway's OpenAPI schema. Nothing generated is committed,
so the site always describes the code it was built from.
"""

from __future__ import annotations

import sys
from pathlib import Path

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # `mkdocs` run as a command does not put the repository on the path
    sys.path.insert(0, str(REPO))

from scripts.docsgen import api_page, settings_page  # noqa: E402


def on_files(files: Files, config: MkDocsConfig) -> Files:
    files.append(File.generated(config, "reference/configuration.md", content=settings_page.render()))
    schema = api_page.openapi_schema()
    files.append(File.generated(config, "reference/api.md", content=api_page.render(schema)))
    files.append(File.generated(config, "reference/openapi.json", content=api_page.to_json(schema)))
    return files
