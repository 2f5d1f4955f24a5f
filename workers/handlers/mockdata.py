"""Deterministic mock data for the mock service (`mocks.mock`) and the simulated iCloud service.

Pure Python, stdlib only, no stored state: every value is drawn from a `random.Random` seeded with
a sha256 of the inputs, so the same identifier and request always give byte-identical output, and
a file id carries enough to regenerate its bytes. Entry timestamps lie in the year before
`EPOCH` (2024-01-01T00:00:00Z) and are written as ISO-8601 UTC with a `Z`.

Scenario controls (all in `authenticate`): password "wrong-password" fails with
`invalid-credentials`; identifiers starting "locked" fail with `source-locked`; identifiers
starting "2fa" need `code` "123456" (`code-required` / `code-invalid` otherwise).

The documented v2 mock account, "Jonny Appleseed" (`MOCK_ACCOUNT` / `MOCK_ACCOUNT_PASSWORD`), has
the richest data: the maximum number of entries per data type and of devices. Like every other
account it accepts any password but the sentinel one.

File ids look like ``photo-3-0-1a2b3c4d``: ``<slug>-<entry index>-<variant>-<tag>``, where the tag
is a sha256 of (identifier, rest), so forged ids and ids of another source are rejected.
"""

import functools
import hashlib
import hmac
import json
import random
import struct
import uuid
import zlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

__all__ = [
    "DATA_TYPES",
    "INFO_TYPES",
    "MOCK_ACCOUNT",
    "MOCK_ACCOUNT_PASSWORD",
    "VALID_2FA_CODE",
    "WRONG_PASSWORD",
    "MockError",
    "authenticate",
    "data_document",
    "file_content",
    "info_document",
    "list_file_ids",
]

INFO_TYPES: tuple[str, ...] = ("account.info", "account.devices")
VALID_2FA_CODE = "123456"
WRONG_PASSWORD = "wrong-password"
MOCK_ACCOUNT = "john.appleseed@reincubate.com"
MOCK_ACCOUNT_PASSWORD = "joshua"
EPOCH = datetime(2024, 1, 1, tzinfo=UTC)
MIN_ENTRIES, MAX_ENTRIES = 5, 20
MAX_PAD_TO_SIZE = 64 * 2**20


class MockError(Exception):
    """A failure the mock service reports; `code` becomes the task's/session's `error`."""

    def __init__(self, code: str, message: str = ""):
        super().__init__(message or code)
        self.code = code
        self.message = message


# --- seeding -------------------------------------------------------------------------------------


def _digest(*parts: object) -> bytes:
    return hashlib.sha256("\x1f".join(map(str, parts)).encode("utf-8")).digest()


def _rng(*parts: object) -> random.Random:
    return random.Random(int.from_bytes(_digest(*parts)[:16], "big"))


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _past(rng: random.Random, max_days: int = 365) -> datetime:
    return EPOCH - timedelta(seconds=rng.randrange(max_days * 86400))


def _guid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4)).upper()


def _phone(rng: random.Random) -> str:
    return f"+447{rng.randrange(100_000_000, 1_000_000_000)}"


def _is_rich(identifier: str) -> bool:
    return identifier.strip().lower() == MOCK_ACCOUNT


# --- people and accounts -------------------------------------------------------------------------

_FIRST = tuple(
    "Alice Ben Chloe David Emma Farhan Grace Hugo Isla Jack Kiran Lucy Mateo Nora Oscar Priya Ruby Sam".split()
)
_LAST = tuple(
    "Anderson Brown Clarke Davies Evans Fischer Garcia Hughes Khan Lewis Martin Nguyen Patel Smith Wilson".split()
)
_COUNTRIES = tuple("GB US IE DE FR ES CA AU".split())


def _person(identifier: str) -> dict:
    """Names for an account: Jonny Appleseed, `first.last@…` spelled out, or seeded."""
    rng = _rng(identifier, "person")
    first, last, country = rng.choice(_FIRST), rng.choice(_LAST), rng.choice(_COUNTRIES)
    local = identifier.split("@")[0].split(".")
    if _is_rich(identifier):
        first, last, country = "Jonny", "Appleseed", "GB"
    elif len(local) == 2 and all(part.isalpha() for part in local):
        first, last = local[0].capitalize(), local[1].capitalize()
    full = f"{first} {last}"
    return {"name": full, "first_name": first, "last_name": last, "full_name": full, "country": country}


def authenticate(identifier: str, payload: dict) -> dict:
    """Simulate session.init and return the source's `info`; raise `MockError` for the scenarios.

    Checked in order: `locked…` identifiers, the sentinel wrong password, then the 2FA code that
    `2fa…` identifiers need. Any other credentials are accepted.
    """
    lowered = identifier.lower()
    if lowered.startswith("locked"):
        raise MockError("source-locked", "The account is locked.")
    if payload.get("password") == WRONG_PASSWORD:
        raise MockError("invalid-credentials", "The credentials were rejected.")
    if lowered.startswith("2fa"):
        code = payload.get("code")
        if code is None or code == "":
            raise MockError("code-required", "A two-factor authentication code is required.")
        if isinstance(code, bool) or str(code).strip() != VALID_2FA_CODE:
            raise MockError("code-invalid", "The two-factor authentication code is invalid.")
    return _person(identifier)


_DEVICE_MODELS = (
    ("iPhone 13", "iPhone14,5"),
    ("iPhone 14", "iPhone14,7"),
    ("iPhone 14 Pro", "iPhone15,2"),
    ("iPhone 15", "iPhone15,4"),
    ("iPhone 15 Pro", "iPhone16,1"),
    ("iPhone SE (3rd generation)", "iPhone14,6"),
    ("iPad Air (5th generation)", "iPad13,16"),
    ("iPad Pro 11-inch (4th generation)", "iPad14,3"),
)
_COLOURS = ("Black", "White", "Blue", "Purple", "Midnight", "Starlight", "Space Grey", "(PRODUCT)RED")
_OS_VERSIONS = ("16.7.2", "17.0.3", "17.1.1", "17.1.2", "17.2")


def _account_info(identifier: str, rng: random.Random) -> dict:
    return {
        "apple_id": identifier,
        "dsid": str(rng.randrange(1_000_000_000, 20_000_000_000)),
        **{key: value for key, value in _person(identifier).items() if key != "name"},
        "date_created": _iso(_past(rng, 8 * 365) - timedelta(days=365)),
        "storage": {"total": 50 * 2**30, "used": rng.randrange(2**30, 45 * 2**30)},
    }


def _account_devices(identifier: str, rng: random.Random) -> dict:
    first_name = _person(identifier)["first_name"]
    devices = []
    for k in range(4 if _is_rich(identifier) else rng.randint(2, 4)):
        model, model_id = rng.choice(_DEVICE_MODELS)
        devices.append(
            {
                "id": _digest(identifier, "device", k).hex()[:40],
                "name": f"{first_name}'s {model.split(' ')[0]}",
                "model": model,
                "model_id": model_id,
                "os_version": rng.choice(_OS_VERSIONS),
                "serial": "".join(rng.choice("ABCDEFGHJKLMNPQRSTUVWXYZ0123456789") for _ in range(12)),
                "colour": rng.choice(_COLOURS),
                "last_backup": _iso(_past(rng, 30)),
            }
        )
    return {"data": devices, "metadata": {"count": len(devices)}}


_INFO_BUILDERS: dict[str, Callable[[str, random.Random], dict]] = {
    "account.info": _account_info,
    "account.devices": _account_devices,
}


def info_document(identifier: str, info_type: str) -> dict:
    """The document for one info type (`account.info` or `account.devices`): a fresh copy of what
    the identifier always gives (built once per worker process for the accounts in use)."""
    if info_type not in _INFO_BUILDERS:
        raise MockError("invalid-info-type", f"Unknown info type {info_type!r}.")
    return json.loads(_info_json(identifier, info_type))


@functools.lru_cache(maxsize=4096)
def _info_json(identifier: str, info_type: str) -> str:
    return json.dumps(_INFO_BUILDERS[info_type](identifier, _rng(identifier, "info", info_type)))


# --- file bytes ----------------------------------------------------------------------------------

_MIME = {
    "jpg": "image/jpeg",
    "heic": "image/heic",
    "png": "image/png",
    "pdf": "application/pdf",
    "mov": "video/quicktime",
    "mp4": "video/mp4",
    "opus": "audio/ogg",
}
_IMAGE_EXTENSIONS = ("jpg", "heic", "png")


def _png(rng: random.Random) -> bytes:
    """A valid 16x16 solid-colour PNG; a hex `tEXt` comment gives it a plausible size."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    raw = (b"\x00" + rng.randbytes(3) * 16) * 16
    # A hand-written stored deflate block: identical bytes whatever zlib implementation is present.
    idat = (
        b"\x78\x01\x01" + struct.pack("<HH", len(raw), len(raw) ^ 0xFFFF) + raw + struct.pack(">I", zlib.adler32(raw))
    )
    comment = b"Comment\x00" + rng.randbytes(rng.randint(512, 32000)).hex().encode()
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", 16, 16, 8, 2, 0, 0, 0))
        + chunk(b"tEXt", comment)
        + chunk(b"IDAT", idat)
        + chunk(b"IEND", b"")
    )


def _jpeg(rng: random.Random) -> bytes:
    """A valid 8x8 grey baseline JPEG (one 1-bit Huffman code each for DC 0 and EOB) plus a COM segment."""

    def segment(marker: int, data: bytes) -> bytes:
        return bytes((0xFF, marker)) + struct.pack(">H", len(data) + 2) + data

    one_code = bytes([1] + [0] * 15) + b"\x00"
    return (
        b"\xff\xd8"
        + segment(0xE0, b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00")
        + segment(0xFE, rng.randbytes(rng.randint(1024, 60000)))
        + segment(0xDB, b"\x00" + b"\x01" * 64)
        + segment(0xC0, b"\x08\x00\x08\x00\x08\x01\x01\x11\x00")
        + segment(0xC4, b"\x00" + one_code)
        + segment(0xC4, b"\x10" + one_code)
        + segment(0xDA, b"\x01\x01\x00\x00\x3f\x00")
        + b"\x3f\xff\xd9"
    )


def _blob(head: bytes, tail: bytes = b"") -> Callable[[random.Random], bytes]:
    """Pseudo-random bytes behind the format's magic number."""
    return lambda rng: head + rng.randbytes(rng.randint(1024, 60000)) + tail


_MAKERS: dict[str, Callable[[random.Random], bytes]] = {
    "png": _png,
    "jpg": _jpeg,
    "heic": _blob(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic"),
    "mov": _blob(b"\x00\x00\x00\x14ftypqt  \x00\x00\x02\x00qt  "),
    "mp4": _blob(b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2"),
    "pdf": _blob(b"%PDF-1.4\n%", b"\n%%EOF\n"),
    "opus": _blob(b"OggS\x00\x02"),
}


def _tag(identifier: str, rest: str) -> str:
    return _digest(identifier, "file-id", rest).hex()[:8]


def _content(identifier: str, file_id: str, ext: str) -> bytes:
    return _MAKERS[ext](_rng(identifier, "file", file_id))


class _Source:
    """Generation context for one (identifier, data type): makes file references, records their extensions."""

    def __init__(self, identifier: str, slug: str):
        self.identifier, self.slug = identifier, slug
        self.extensions: dict[str, str] = {}
        self.names: dict[str, str] = {}  # file id → the file's own name, with its extension

    def _add(self, index: int, variant: str, ext: str) -> tuple[str, bytes]:
        rest = f"{self.slug}-{index}-{variant}"
        file_id = f"{rest}-{_tag(self.identifier, rest)}"
        self.extensions[file_id] = ext
        return file_id, _content(self.identifier, file_id, ext)

    def file(
        self, index: int, variant: str, ext: str, name: str, *, filepath: str = "", dims: tuple[int, int] | None = None
    ) -> dict:
        """A file object; with `dims`, an image object (`filename`, `filepath`, `width`, `height`)."""
        file_id, content = self._add(index, variant, ext)
        obj = {
            "id": file_id,
            "data_type": "image" if dims else "file",
            "name": name,
            "extension": ext,
            "mime_type": _MIME[ext],
            "size": len(content),
            "checksum": hashlib.md5(content).hexdigest(),
        }
        if dims:
            filename = f"{name}.{ext.upper()}"
            obj.update(filename=filename, filepath=f"{filepath}/{filename}", width=dims[0], height=dims[1])
        self.names[file_id] = obj.get("filename") or f"{name}.{ext}"
        return obj

    def attachment(self, index: int, variant: str, ext: str, filename: str) -> dict:
        """An attachment reference as messages entries carry it (`file_id`, not `id`)."""
        file_id, content = self._add(index, variant, ext)
        self.names[file_id] = filename
        return {
            "file_id": file_id,
            "filename": filename,
            "mime_type": _MIME[ext],
            "size": len(content),
            "checksum": hashlib.md5(content).hexdigest(),
        }


# --- data entries --------------------------------------------------------------------------------

Builder = Callable[[_Source, random.Random, int, str], dict]

_TEXTS = (
    "On my way!",
    "Running 10 minutes late, sorry",
    "Did you see the match last night?",
    "Can you pick up some milk?",
    "Happy birthday! \U0001f389",
    "Call me when you're free",
    "Sounds good \U0001f44d",
    "What time is dinner?",
    "Here's the photo from yesterday",
    "Let's catch up next week",
    "Thanks so much!",
    "See you at the station",
)
_SITES = (
    ("https://www.bbc.co.uk/news", "BBC News - Home"),
    ("https://www.apple.com/uk/iphone/", "iPhone - Apple (UK)"),
    ("https://en.wikipedia.org/wiki/Cupertino,_California", "Cupertino, California - Wikipedia"),
    ("https://reincubate.com/support/", "Reincubate Support"),
    ("https://github.com/reincubate/ricloud", "reincubate/ricloud"),
    ("https://www.nationalrail.co.uk/", "National Rail"),
    ("https://maps.apple.com/?q=coffee", "Apple Maps"),
)
_NOTES = (
    ("Shopping", "Eggs, bread, coffee, oat milk"),
    ("Gift ideas", "Book for Mum; headphones for Sam"),
    ("Wi-Fi", "Network: Appleseed-5G"),
    ("Trip to Lisbon", "Flights Fri 07:40, hotel near Alfama"),
    ("Recipes", "Lemon drizzle: 225g butter, 225g sugar, 4 eggs"),
    ("Meeting notes", "Q1 roadmap, hiring, offsite"),
)


def _photo(src: _Source, rng: random.Random, i: int, when: str) -> dict:
    ext = rng.choices(_IMAGE_EXTENSIONS, weights=(3, 6, 2))[0]
    width, height = (1179, 2556) if ext == "png" else rng.choice(((4032, 3024), (3024, 4032), (4284, 5712)))
    name = f"IMG_{i + 1:04d}"
    files = [src.file(i, "0", ext, name, filepath="Media/DCIM/100APPLE", dims=(width, height))]
    if rng.random() < 0.5:  # a medium-resolution JPEG rendition
        files.append(
            src.file(
                i, "1", "jpg", name, filepath="Media/PhotoData/Mutations/DCIM/100APPLE", dims=(width // 4, height // 4)
            )
        )
    location = {"latitude": round(rng.uniform(50.0, 56.0), 6), "longitude": round(rng.uniform(-4.0, 1.0), 6)}
    return {
        "id": _guid(rng),
        "date": when,
        "favorite": rng.random() < 0.2,
        "hidden": False,
        "location": location if rng.random() < 0.6 else None,
        "files": files,
    }


def _whatsapp(src: _Source, rng: random.Random, i: int, when: str) -> dict:
    chat = _phone(rng)[1:] + "@s.whatsapp.net"
    entry = {
        "id": _guid(rng),
        "chat_id": chat,
        "from_me": rng.random() < 0.5,
        "text": rng.choice(_TEXTS),
        "date": when,
        "status": rng.choice(("delivered", "read")),
        "deleted": False,
    }
    if i % 3 == 2 or (i % 3 == 0 and rng.random() < 0.25):  # some entries, never all
        kind = rng.choice(("jpg", "jpg", "pdf", "opus", "mp4"))
        if kind == "jpg":
            name = f"IMG-{when[:10].replace('-', '')}-WA{i:04d}"
            entry["file"] = src.file(i, "file", "jpg", name, filepath=f"Message/Media/{chat}", dims=(1600, 1200))
        else:
            entry["file"] = src.file(i, "file", kind, f"{'DOC' if kind == 'pdf' else 'MEDIA'}-WA{i:04d}")
    return entry


def _messages(service: str) -> Builder:
    """iMessage and SMS entries: some carry attachments, and entry 4 (mod 9) a Digital Touch one."""

    def build(src: _Source, rng: random.Random, i: int, when: str) -> dict:
        handle = _phone(rng)
        entry = {
            "id": _guid(rng),
            "conversation_id": handle,
            "handle": handle,
            "from_me": rng.random() < 0.5,
            "service": service,
            "text": rng.choice(_TEXTS),
            "date": when,
            "read": rng.random() < 0.9,
            "deleted": False,
            "attachments": [],
        }
        if i % 3 == 1:
            for a in range(rng.randint(1, 2)):
                ext = rng.choice(("jpg", "heic", "png", "mov", "pdf"))
                filename = f"Document {i}.pdf" if ext == "pdf" else f"IMG_{rng.randrange(1000, 9999)}.{ext.upper()}"
                entry["attachments"].append(src.attachment(i, f"a{a}", ext, filename))
        if i % 9 == 4:
            entry["attachments"].append(src.attachment(i, "dtouch", "png", "DigitalTouch.png"))
        return entry

    return build


def _call(src: _Source, rng: random.Random, i: int, when: str) -> dict:
    answered = rng.random() < 0.8
    return {
        "id": _guid(rng),
        "address": _phone(rng),
        "name": f"{rng.choice(_FIRST)} {rng.choice(_LAST)}",
        "direction": rng.choice(("incoming", "outgoing")),
        "answered": answered,
        "duration": rng.randrange(5, 3600) if answered else 0,
        "service": rng.choice(("Phone", "FaceTime Audio", "FaceTime Video", "WhatsApp")),
        "date": when,
    }


def _contact(src: _Source, rng: random.Random, i: int, when: str) -> dict:
    first, last = rng.choice(_FIRST), rng.choice(_LAST)
    return {
        "id": _guid(rng),
        "first_name": first,
        "last_name": last,
        "organisation": rng.choice(("", "", "Reincubate", "Acme Ltd", "NHS")),
        "phones": [{"label": rng.choice(("mobile", "home", "work")), "number": _phone(rng)}],
        "emails": [{"label": "home", "address": f"{first}.{last}@example.com".lower()}],
        "modified": when,
    }


def _note(src: _Source, rng: random.Random, i: int, when: str) -> dict:
    title, text = rng.choice(_NOTES)
    created = datetime.strptime(when, "%Y-%m-%dT%H:%M:%SZ") - timedelta(days=rng.randrange(0, 90))
    return {
        "id": _guid(rng),
        "title": title,
        "text": text,
        "folder": rng.choice(("Notes", "Personal", "Work")),
        "created": _iso(created),
        "modified": when,
    }


def _history(src: _Source, rng: random.Random, i: int, when: str) -> dict:
    url, title = rng.choice(_SITES)
    return {"id": _guid(rng), "url": url, "title": title, "visit_count": rng.randint(1, 40), "date": when}


class _Kind(NamedTuple):
    slug: str  # file id prefix
    time_key: str  # the entry field since/until filter on
    build: Builder


_KINDS: dict[str, _Kind] = {
    "ios_messages.messages": _Kind("imessage", "date", _messages("iMessage")),
    "messages.sms": _Kind("sms", "date", _messages("SMS")),
    "whatsapp.messages": _Kind("whatsapp", "date", _whatsapp),
    "photos": _Kind("photo", "date", _photo),
    "call_history.calls": _Kind("call", "date", _call),
    "contacts.contacts": _Kind("contact", "modified", _contact),
    "notes.notes": _Kind("note", "modified", _note),
    "safari.history": _Kind("safari", "date", _history),
}
_SLUGS = {kind.slug: data_type for data_type, kind in _KINDS.items()}
DATA_TYPES: tuple[str, ...] = tuple(_KINDS)


def _entries(identifier: str, data_type: str) -> tuple[list[dict], _Source]:
    """Every entry of a data type (newest first) and the generation context holding their files."""
    kind = _KINDS[data_type]
    src, rng = _Source(identifier, kind.slug), _rng(identifier, "data", data_type)
    count = MAX_ENTRIES if _is_rich(identifier) else rng.randint(MIN_ENTRIES, MAX_ENTRIES)
    moments = sorted((_past(rng) for _ in range(count)), reverse=True)
    return [kind.build(src, rng, i, _iso(moment)) for i, moment in enumerate(moments)], src


@functools.lru_cache(maxsize=256)
def _files(identifier: str, data_type: str) -> _Source:
    """The generation context of a source's data type: its files' extensions and names (do not mutate)."""
    return _entries(identifier, data_type)[1]


def _file_extensions(identifier: str, data_type: str) -> dict[str, str]:
    """{file id: extension} of every file a source's data type references (internal; do not mutate)."""
    return _files(identifier, data_type).extensions


def _parse_moment(name: str, value: object) -> datetime:
    try:
        moment = datetime.fromisoformat(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise MockError("invalid-parameter", f"`{name}` must be an ISO-8601 datetime.") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def data_document(
    identifier: str,
    data_type: str,
    *,
    since: str | None = None,
    until: str | None = None,
    pad_to_size: int | None = None,
) -> dict:
    """The result document `{"data": [...], "metadata": {...}}` for one data type.

    `since`/`until` (inclusive) filter entries on their timestamp; file ids do not change with the
    window. `pad_to_size` adds `metadata.padding` so that `json.dumps(doc, sort_keys=True)` is at
    least that many bytes (exactly, when padding is needed).
    """
    if data_type not in _KINDS:
        raise MockError("invalid-data-type", f"Unknown data type {data_type!r}.")
    entries, _ = _entries(identifier, data_type)
    metadata: dict = {"data_type": data_type}
    time_key = _KINDS[data_type].time_key
    for name, value, keep in (("since", since, lambda a, b: a >= b), ("until", until, lambda a, b: a <= b)):
        if value is not None:
            bound = _parse_moment(name, value)
            entries = [e for e in entries if keep(datetime.fromisoformat(e[time_key]), bound)]
            metadata[name] = value
    metadata["count"] = len(entries)
    document = {"data": entries, "metadata": metadata}
    if pad_to_size is not None:
        if isinstance(pad_to_size, bool) or not isinstance(pad_to_size, int | float):
            raise MockError("invalid-parameter", "`pad_to_size` must be a number of bytes.")
        if not 0 <= pad_to_size <= MAX_PAD_TO_SIZE:  # also rejects NaN
            raise MockError("invalid-parameter", f"`pad_to_size` must be between 0 and {MAX_PAD_TO_SIZE}.")
        metadata["padding"] = ""
        # sort_keys/ensure_ascii output is ASCII, so characters and bytes count alike.
        missing = int(pad_to_size) - len(json.dumps(document, sort_keys=True))
        metadata["padding"] = "x" * max(0, missing)
    return document


def file_content(identifier: str, file_id: str) -> tuple[bytes, str]:
    """The bytes and lowercase extension of a file a data document of this source references."""
    not_found = MockError("file-not-found", f"No file {file_id!r} in this source.")
    parts = file_id.split("-") if isinstance(file_id, str) else []
    if len(parts) != 4 or parts[0] not in _SLUGS:
        raise not_found
    rest, tag = file_id.rsplit("-", 1)
    if not hmac.compare_digest(tag.encode(), _tag(identifier, rest).encode()):
        raise not_found
    ext = _file_extensions(identifier, _SLUGS[parts[0]]).get(file_id)
    if ext is None:
        raise not_found
    return _content(identifier, file_id, ext), ext


def file_name(identifier: str, file_id: str) -> str:
    """The name (with extension) a data document gives a file of this source, e.g. `IMG_0003.JPG`;
    raises MockError `file-not-found` like `file_content`."""
    file_content(identifier, file_id)  # validates the id
    return _files(identifier, _SLUGS[file_id.split("-")[0]]).names[file_id]


def list_file_ids(document: dict) -> list[str]:
    """Every file id a data document references (all variants and attachments), in document order."""
    ids: list[str] = []
    for entry in document.get("data", []):
        ids.extend(variant["id"] for variant in entry.get("files", []))
        if "file" in entry:
            ids.append(entry["file"]["id"])
        ids.extend(attachment["file_id"] for attachment in entry.get("attachments", []))
    return ids
