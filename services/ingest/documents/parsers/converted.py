"""Legacy binary Office formats (.doc, .ppt, WPS's .wps and .dps), read by converting them.

No maintained Python library reads these OLE2 formats, so LibreOffice (headless, from
Debian's ``libreoffice-writer-nogui``/``libreoffice-impress-nogui``; the worker image and
``make test``/``make run`` install them) converts each file to its OOXML counterpart, which
the .docx/.pptx parsers then read with headings, tables and slides intact. Without LibreOffice,
a .doc is read by ``antiword`` (plain text); anything else fails its job saying what to install.

Each conversion runs in a fresh temporary directory with its own LibreOffice profile (two
workers converting at once would otherwise fight over one profile's lock), under a time limit
(``ParseLimits.convert_timeout_s``): a file that hangs the converter fails its job and the
converter's whole process group is killed.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path, PurePath

from services.ingest.documents.parsers.base import ParseError, ParseLimits, Segment, single
from services.ingest.documents.parsers.office import parse_docx, parse_pptx
from services.ingest.documents.parsers.rtf import parse_rtf

# What LibreOffice turns each format into, and which parser reads the result.
_TARGETS = {
    ".doc": ("docx", parse_docx),
    ".wps": ("docx", parse_docx),
    ".ppt": ("pptx", parse_pptx),
    ".dps": ("pptx", parse_pptx),
}
_INSTALL_HINT = "install LibreOffice (Debian: libreoffice-writer-nogui libreoffice-impress-nogui)"


def _soffice() -> str | None:
    return shutil.which("soffice") or shutil.which("libreoffice")


def _run(name: str, command: list[str], timeout_s: float, cwd: Path) -> subprocess.CompletedProcess[bytes]:
    """Run a converter in its own process group, killed whole when it overruns."""
    process = subprocess.Popen(
        command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        raise ParseError(f"{name}: conversion took longer than {timeout_s:g} s and was stopped") from None
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def libreoffice_convert(name: str, data: bytes, suffix: str, target: str, timeout_s: float) -> bytes:
    """``data`` (a ``suffix`` file) converted by LibreOffice to ``target`` ("docx", "pdf", ...).

    Raises ParseError naming ``name`` when LibreOffice is missing, overruns or produces nothing.
    """
    soffice = _soffice()
    if soffice is None:
        raise ParseError(
            f"{name}: reading {suffix} files needs LibreOffice, which is not installed here ({_INSTALL_HINT})"
        )
    with tempfile.TemporaryDirectory(prefix="zhiku-convert-") as work:
        folder = Path(work)
        source = folder / f"input{suffix}"  # never the user's file name: it is not a safe path
        source.write_bytes(data)
        command = [
            soffice,
            f"-env:UserInstallation={(folder / 'profile').as_uri()}",
            "--headless",
            "--norestore",
            "--convert-to",
            target,
            "--outdir",
            str(folder / "out"),
            str(source),
        ]
        result = _run(name, command, timeout_s, folder)
        converted = folder / "out" / f"input.{target}"
        if not converted.is_file():
            detail = (result.stderr or result.stdout).decode(errors="replace").strip()[-300:]
            raise ParseError(
                f"{name}: LibreOffice could not convert this {suffix} file (corrupt, encrypted or not "
                f"really {suffix}?){': ' + detail if detail else ''}"
            )
        return converted.read_bytes()


def _antiword(name: str, data: bytes, limits: ParseLimits, antiword: str) -> list[Segment]:
    with tempfile.TemporaryDirectory(prefix="zhiku-convert-") as work:
        folder = Path(work)
        (folder / "input.doc").write_bytes(data)
        # -m UTF-8.txt: write UTF-8 whatever the locale; -w 0: no hard line wrapping.
        result = _run(
            name, [antiword, "-m", "UTF-8.txt", "-w", "0", "input.doc"], limits.convert_timeout_s, folder
        )
    if result.returncode != 0:
        detail = result.stderr.decode(errors="replace").strip()[-300:]
        raise ParseError(f"{name}: antiword could not read this .doc file: {detail or 'no reason given'}")
    return single(result.stdout.decode("utf-8", errors="replace"))


def parse_converted(name: str, data: bytes, limits: ParseLimits) -> list[Segment]:
    suffix = PurePath(name).suffix.lower()
    if suffix == ".doc" and data.lstrip().startswith(b"{\\rtf"):
        return parse_rtf(name, data, limits)  # Word saves RTF under .doc when asked to
    if not data.startswith(b"\xd0\xcf\x11\xe0"):
        raise ParseError(f"{name}: not a legacy Office {suffix} file (no OLE2 header)")
    antiword = shutil.which("antiword")
    if _soffice() is None and suffix == ".doc" and antiword is not None:
        return _antiword(name, data, limits, antiword)
    target, parser = _TARGETS[suffix]  # without LibreOffice, this says what to install
    return parser(name, libreoffice_convert(name, data, suffix, target, limits.convert_timeout_s), limits)
