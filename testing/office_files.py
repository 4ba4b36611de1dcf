"""Office files for tests: written by the real LibreOffice, or by odfpy where it needs no converter."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

from services.ingest.documents.parsers.converted import libreoffice_convert

CONVERT_TIMEOUT_S = 180.0


def written_by_libreoffice(source: Path, target: str) -> bytes:
    """``source`` as LibreOffice writes it in the ``target`` format ("doc", "ppt", "pdf", ...)."""
    assert shutil.which("soffice"), "LibreOffice is part of the test environment (make test installs it)"
    return libreoffice_convert(source.name, source.read_bytes(), source.suffix, target, CONVERT_TIMEOUT_S)


def ods_bytes(sheets: dict[str, list[list[str]]]) -> bytes:
    """A spreadsheet with one sheet per entry, each a list of rows of text cells."""
    from odf import table, text
    from odf.opendocument import OpenDocumentSpreadsheet

    document = OpenDocumentSpreadsheet()
    for name, rows in sheets.items():
        sheet = table.Table(name=name)
        for values in rows:
            row = table.TableRow()
            for value in values:
                cell = table.TableCell()
                cell.addElement(text.P(text=value))
                row.addElement(cell)
            sheet.addElement(row)
        document.spreadsheet.addElement(sheet)
    buffer = io.BytesIO()
    document.write(buffer)
    return buffer.getvalue()
