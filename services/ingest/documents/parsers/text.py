"""Text-based formats: plain text and Markdown, CSV/TSV, JSON, JSON Lines, Jupyter notebooks."""

from __future__ import annotations

import csv
import io
import json
from pathlib import PurePath
from typing import Any

from services.ingest.documents.parsers.base import (
    ParseError,
    ParseLimits,
    Segment,
    decode_text,
    markdown_table,
    single,
)


def parse_text(name: str, data: bytes, limits: ParseLimits) -> list[Segment]:
    return single(decode_text(name, data))


def parse_delimited(name: str, data: bytes, limits: ParseLimits) -> list[Segment]:
    """CSV or TSV (by extension) as one Markdown table whose header is the first row."""
    delimiter = "\t" if PurePath(name).suffix.lower() in (".tsv", ".tab") else ","
    text = decode_text(name, data)
    try:
        rows = list(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True))
    except csv.Error as error:
        raise ParseError(f"{name}: malformed {'TSV' if delimiter == chr(9) else 'CSV'} ({error})") from None
    return single(markdown_table(rows))


def _flatten(value: Any, path: str, lines: list[str]) -> None:
    """JSON as ``path: value`` lines: keys stay next to their values, so both are searchable."""
    if isinstance(value, dict):
        if not value and path:
            lines.append(f"{path}: {{}}")
        for key, item in value.items():
            _flatten(item, f"{path}.{key}" if path else str(key), lines)
    elif isinstance(value, list):
        if not value and path:
            lines.append(f"{path}: []")
        for index, item in enumerate(value):
            _flatten(item, f"{path}[{index}]", lines)
    else:
        text = (
            json.dumps(value, ensure_ascii=False) if value is None or isinstance(value, bool) else str(value)
        )
        lines.append(f"{path}: {text}" if path else text)


def _load_json(name: str, text: str, what: str = "JSON") -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise ParseError(f"{name}: invalid {what} ({error})") from None


def parse_json(name: str, data: bytes, limits: ParseLimits) -> list[Segment]:
    lines: list[str] = []
    _flatten(_load_json(name, decode_text(name, data)), "", lines)
    return single("\n".join(lines))


def parse_jsonl(name: str, data: bytes, limits: ParseLimits) -> list[Segment]:
    """One paragraph per record; a bad line fails the file with its line number."""
    records: list[str] = []
    for number, line in enumerate(decode_text(name, data).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as error:
            raise ParseError(f"{name}: invalid JSON on line {number} ({error})") from None
        lines: list[str] = []
        _flatten(value, "", lines)
        records.append("\n".join(lines))
    return single("\n\n".join(records))


def _cell_source(cell: dict[str, Any]) -> str:
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else str(source)


def _cell_outputs(cell: dict[str, Any]) -> str:
    parts: list[str] = []
    for output in cell.get("outputs") or []:
        if output.get("output_type") == "stream":
            parts.append(_cell_source({"source": output.get("text", "")}))
        elif "data" in output and "text/plain" in output["data"]:
            parts.append(_cell_source({"source": output["data"]["text/plain"]}))
        elif output.get("output_type") == "error":
            parts.append(f"{output.get('ename', '')}: {output.get('evalue', '')}")
    return "\n".join(part.rstrip() for part in parts if part.strip())


def parse_ipynb(name: str, data: bytes, limits: ParseLimits) -> list[Segment]:
    """Markdown cells as written (their headings count), code cells fenced, outputs after them."""
    notebook = _load_json(name, decode_text(name, data), "notebook JSON")
    cells = notebook.get("cells") if isinstance(notebook, dict) else None
    if not isinstance(cells, list):
        raise ParseError(f"{name}: not a Jupyter notebook (no 'cells' list)")
    language = (
        notebook.get("metadata", {}).get("kernelspec", {}).get("language")
        or notebook.get("metadata", {}).get("language_info", {}).get("name")
        or ""
    )
    blocks: list[str] = []
    for cell in cells:
        if not isinstance(cell, dict):
            continue
        source = _cell_source(cell).strip()
        if cell.get("cell_type") == "code":
            if source:
                blocks.append(f"```{language}\n{source}\n```")
            outputs = _cell_outputs(cell)
            if outputs:
                blocks.append(f"Output:\n{outputs}")
        elif source:
            blocks.append(source)
    return single("\n\n".join(blocks))
