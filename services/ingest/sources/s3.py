"""S3-compatible object storage (AWS, MinIO, Ceph, moto...) through boto3, with a key prefix filter.

Objects under the prefix are the items (folders' placeholder keys ending in "/" are not);
their file names are the keys after the prefix, flattened. Credentials come decrypted from the
catalog; without them boto3's own chain applies (an instance role, the environment).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from services.ingest.sources.items import ItemUnavailable, SourceItem, SourceUnavailable, file_name_for


def _reason(error: Exception) -> str:
    if isinstance(error, ClientError):
        detail = error.response.get("Error", {})
        return f"{detail.get('Code', 'error')}: {detail.get('Message', '') or error}"
    return str(error)


class S3Connector:
    def __init__(
        self,
        bucket: str,
        prefix: str,
        endpoint_url: str,
        region: str,
        credentials: dict[str, str],
        timeout_s: float,
        max_bytes: int,
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix
        self.max_bytes = max_bytes
        self.client: Any = boto3.client(
            "s3",
            endpoint_url=endpoint_url or None,
            region_name=region or "us-east-1",
            aws_access_key_id=credentials.get("access_key_id") or None,
            aws_secret_access_key=credentials.get("secret_access_key") or None,
            config=Config(
                connect_timeout=timeout_s,
                read_timeout=timeout_s,
                retries={"max_attempts": 2, "mode": "standard"},
            ),
        )

    def list_items(self) -> list[SourceItem]:
        items: list[SourceItem] = []
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self.prefix
            )
            for page in pages:
                for entry in page.get("Contents", []):
                    key: str = entry["Key"]
                    if key.endswith("/"):
                        continue
                    name = file_name_for(key[len(self.prefix) :].lstrip("/") or key)
                    items.append(SourceItem(key, name, self._reader(key, int(entry.get("Size", 0)))))
        except (BotoCoreError, ClientError) as error:
            where = f"s3://{self.bucket}/{self.prefix}"
            raise SourceUnavailable(f"cannot list {where}: {_reason(error)}") from None
        return items

    def _reader(self, key: str, size: int) -> Callable[[], bytes]:
        def read() -> bytes:
            if size > self.max_bytes:
                raise ItemUnavailable(f"{size} bytes; the limit is {self.max_bytes}")
            try:
                body: bytes = self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
            except (BotoCoreError, ClientError) as error:
                raise ItemUnavailable(f"cannot read s3://{self.bucket}/{key}: {_reason(error)}") from None
            return body

        return read
