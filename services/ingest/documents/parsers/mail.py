"""E-mail: RFC 822 ``.eml`` through the standard library, Outlook ``.msg`` through extract-msg.

Both become the same shape: a subject heading, From/To/Cc/Date lines, the body (plain text
preferred, HTML converted otherwise) and the attachment names, so a search for a sender or a
subject finds the message.
"""

from __future__ import annotations

import email
import email.policy

from services.ingest.documents.parsers.base import ParseError, ParseLimits, Segment, single
from services.ingest.documents.parsers.web import html_to_text


def _message_text(
    subject: str, headers: list[tuple[str, str]], body: str, attachments: list[str]
) -> list[Segment]:
    parts = [f"# {subject}"] if subject else []
    parts.append("\n".join(f"{key}: {value}" for key, value in headers if value.strip(" <>")))
    parts.append(body)
    if attachments:
        parts.append("Attachments: " + ", ".join(attachments))
    return single("\n\n".join(part for part in parts if part), {"title": subject} if subject else {})


def parse_eml(name: str, data: bytes, limits: ParseLimits) -> list[Segment]:
    message = email.message_from_bytes(data, policy=email.policy.default)
    if not (message.keys() or message.get_payload()):
        raise ParseError(f"{name}: not an e-mail message (no headers found)")
    body = ""
    part = message.get_body(preferencelist=("plain", "html"))
    if part is not None:
        try:
            content = part.get_content()
        except (LookupError, ValueError) as error:  # unknown charset, bad transfer encoding
            raise ParseError(f"{name}: the message body cannot be decoded ({error})") from None
        body = html_to_text(content)[1] if part.get_content_type() == "text/html" else str(content)
    attachments = [a.get_filename() or a.get_content_type() for a in message.iter_attachments()]
    headers = [(key, str(message.get(key, ""))) for key in ("From", "To", "Cc", "Date")]
    return _message_text(str(message.get("Subject", "")), headers, body, attachments)


def parse_msg(name: str, data: bytes, limits: ParseLimits) -> list[Segment]:
    import extract_msg
    from extract_msg.exceptions import ExMsgBaseException
    from extract_msg.msg_classes import MessageBase

    try:
        message = extract_msg.openMsg(data, delayAttachments=True)
    except (ExMsgBaseException, OSError, ValueError) as error:
        raise ParseError(
            f"{name}: not a readable Outlook .msg file ({type(error).__name__}: {error})"
        ) from None
    try:
        if not isinstance(message, MessageBase):
            # openMsg gives a bare MSGFile, with no message properties, for the class "IPM".
            raise ParseError(f"{name}: an Outlook .msg file of class {message.classType!r}, not a message")
        body = message.body or ""
        # Typed as bytes, but made from the RTF body by a cast over what RTFDE returns: allow str.
        html: bytes | str | None = message.htmlBody if not body.strip() else None
        if html:
            body = html_to_text(html.decode("utf-8", "replace") if isinstance(html, bytes) else html)[1]
        headers = [
            ("From", message.sender or ""),
            ("To", message.to or ""),
            ("Cc", message.cc or ""),
            ("Date", str(message.date or "")),
        ]
        attachments = [
            getattr(a, "longFilename", None) or getattr(a, "shortFilename", None) or "attachment"
            for a in message.attachments
        ]
        return _message_text(message.subject or "", headers, body, attachments)
    finally:
        message.close()
