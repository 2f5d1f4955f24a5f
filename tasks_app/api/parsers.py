"""JSON bodies whatever the Content-Type.

ricloud-py 3.x sends its JSON body as a str without a Content-Type header (http.client then
encodes it as Latin-1), and sends the literal body `null` for actions without parameters.
"""
import json
import math

from rest_framework import exceptions
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.parsers import BaseParser

__all__ = ["AnyContentJSONParser", "JSONBodyNegotiation", "decode_json_body", "BodyTooLarge"]


class BodyTooLarge(exceptions.APIException):
    status_code = 413
    default_detail = "The request body is too large."
    default_code = "request-too-large"


def _no_constants(name: str):
    raise ValueError(f"{name} is not a JSON number")


def _storable(value) -> bool:
    """What Postgres jsonb and text columns can hold: no NUL characters, only finite numbers."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return False
        elif isinstance(item, float):
            if not math.isfinite(item):
                return False
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return True


def decode_json_body(raw: bytes):
    """Decode UTF-8 (Latin-1 as fallback) JSON; an empty or `null` body means no parameters."""
    if not raw or not raw.strip():
        return {}
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    try:
        data = json.loads(text, parse_constant=_no_constants)
    except (ValueError, RecursionError) as exc:
        reason = "nested too deeply" if isinstance(exc, RecursionError) else exc
        raise exceptions.ParseError(f"The request body is not valid JSON: {reason}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise exceptions.ParseError("The request body must be a JSON object.")
    if not _storable(data):
        raise exceptions.ParseError("The request body holds NUL characters or non-finite numbers.")
    return data


class AnyContentJSONParser(BaseParser):
    media_type = "*/*"

    def parse(self, stream, media_type=None, parser_context=None):
        """Reads at most RICLOUD_MAX_BODY_BYTES (+1 to tell): a larger body is a 413, never read whole."""
        from django.conf import settings

        limit = settings.RICLOUD_MAX_BODY_BYTES
        raw = stream.read(limit + 1) if stream is not None else b""
        if len(raw) > limit:
            raise BodyTooLarge(f"The request body is larger than {limit} bytes.")
        return decode_json_body(raw)


class JSONBodyNegotiation(DefaultContentNegotiation):
    """Pick the view's first parser for every request body instead of answering 415."""

    def select_parser(self, request, parsers):
        return parsers[0] if parsers else None
