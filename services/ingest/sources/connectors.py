"""The connector of a source record: its kind's class, built from its settings and secret."""

from __future__ import annotations

from services.ingest.config import IngestSettings
from services.ingest.sources.directory import DirectoryConnector
from services.ingest.sources.items import Connector
from services.ingest.sources.s3 import S3Connector
from services.ingest.sources.web import WebConnector
from services.ingest.store.secrets import SecretBox
from services.ingest.store.sources import SourceRecord

KINDS = ("directory", "s3", "web")


def connector_for(source: SourceRecord, settings: IngestSettings) -> Connector:
    config = source.config
    if source.kind == "directory":
        return DirectoryConnector(settings.sources_root, config["path"], settings.max_file_bytes)
    if source.kind == "s3":
        return S3Connector(
            config["bucket"],
            config.get("prefix", ""),
            config.get("endpoint_url", ""),
            config.get("region", ""),
            SecretBox(settings.sources_key).open(source.secret),
            settings.sources_timeout_s,
            settings.max_file_bytes,
        )
    if source.kind == "web":
        return WebConnector(
            config.get("start_url", ""),
            config.get("sitemap_url", ""),
            int(config.get("max_depth", settings.web_max_depth)),
            int(config.get("max_pages", settings.web_max_pages)),
            int(config.get("max_page_bytes", settings.web_max_page_bytes)),
            settings.sources_timeout_s,
            settings.sources_allow_private_networks,
        )
    raise ValueError(f"unknown source kind {source.kind!r}")
