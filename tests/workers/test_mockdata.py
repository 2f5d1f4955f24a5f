"""The deterministic mock data generator: no Django, no database."""

import hashlib
import json
import struct
import zlib
from datetime import UTC, datetime

import pytest

from workers.handlers import mockdata
from workers.handlers.mockdata import MockError

ALICE = "alice@example.com"
BOB = "bob@example.com"
IDENTIFIERS = (ALICE, BOB, "jane.doe@example.com", mockdata.MOCK_ACCOUNT, "plain-id-123")
FILE_TYPES = ("photos", "whatsapp.messages", "ios_messages.messages", "messages.sms")
PLAIN_TYPES = tuple(t for t in mockdata.DATA_TYPES if t not in FILE_TYPES)


def parse_file_ids_from_result_data(result_data):
    """Copied from the official client (ricloud 3.2.0, ricloud/samples/helpers.py)."""
    file_ids = []
    for data_entry in result_data["data"]:
        if "files" in data_entry:
            # Just pick the first variant for many-file entries.
            file_ids.append(data_entry["files"][0]["id"])
        elif "file" in data_entry:
            file_ids.append(data_entry["file"]["id"])
        elif "attachments" in data_entry:
            ids = [f["file_id"] for f in data_entry["attachments"] if "dtouch" not in f["file_id"]]
            file_ids.extend(ids)
    return file_ids


def serialise(doc):
    return json.dumps(doc, sort_keys=True).encode()


def file_refs(doc):
    """{file id: reference object} for every file object and attachment in a data document."""
    refs = {}
    for entry in doc["data"]:
        for ref in entry.get("files", []) + ([entry["file"]] if "file" in entry else []):
            refs[ref["id"]] = ref
        for ref in entry.get("attachments", []):
            refs[ref["file_id"]] = ref
    return refs


def parse_time(value):
    assert value.endswith("Z"), value
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def error_code(fn, *args, **kwargs):
    with pytest.raises(MockError) as excinfo:
        fn(*args, **kwargs)
    return excinfo.value.code


# --- determinism ---------------------------------------------------------------------------------


def test_same_inputs_give_identical_bytes():
    for identifier in (ALICE, mockdata.MOCK_ACCOUNT):
        for info_type in mockdata.INFO_TYPES:
            assert serialise(mockdata.info_document(identifier, info_type)) == serialise(
                mockdata.info_document(identifier, info_type)
            )
        for data_type in mockdata.DATA_TYPES:
            first = mockdata.data_document(identifier, data_type)
            assert serialise(first) == serialise(mockdata.data_document(identifier, data_type))
            for file_id in mockdata.list_file_ids(first):
                assert mockdata.file_content(identifier, file_id) == mockdata.file_content(identifier, file_id)


def test_different_identifiers_give_different_data():
    for data_type in mockdata.DATA_TYPES:
        assert serialise(mockdata.data_document(ALICE, data_type)) != serialise(mockdata.data_document(BOB, data_type))
    for info_type in mockdata.INFO_TYPES:
        assert mockdata.info_document(ALICE, info_type) != mockdata.info_document(BOB, info_type)
    assert set(mockdata.list_file_ids(mockdata.data_document(ALICE, "photos"))).isdisjoint(
        mockdata.list_file_ids(mockdata.data_document(BOB, "photos"))
    )


# --- authenticate --------------------------------------------------------------------------------


def test_authenticate_accepts_any_credentials_and_returns_info():
    info = mockdata.authenticate(ALICE, {"password": "anything"})
    assert set(info) >= {"name", "first_name", "last_name", "full_name", "country"}
    assert info["full_name"] == f"{info['first_name']} {info['last_name']}"
    assert mockdata.authenticate(ALICE, {}) == info  # no password is fine for the mock
    assert mockdata.authenticate(ALICE, {"password": 1234}) == info


def test_authenticate_names_come_from_the_identifier():
    info = mockdata.authenticate("jane.doe@example.com", {"password": "x"})
    assert (info["first_name"], info["last_name"], info["full_name"]) == ("Jane", "Doe", "Jane Doe")


def test_documented_mock_account_is_jonny_appleseed():
    info = mockdata.authenticate(mockdata.MOCK_ACCOUNT, {"password": mockdata.MOCK_ACCOUNT_PASSWORD})
    assert info["full_name"] == "Jonny Appleseed"
    # The v3 integration test logs in to the same account with another password.
    assert mockdata.authenticate(mockdata.MOCK_ACCOUNT, {"password": "abcd1234"}) == info


def test_wrong_password_is_rejected():
    assert error_code(mockdata.authenticate, ALICE, {"password": mockdata.WRONG_PASSWORD}) == "invalid-credentials"


@pytest.mark.parametrize("identifier", ["locked@example.com", "LOCKED-account", "Locked.user@x.com"])
def test_locked_identifiers_fail_before_the_password_check(identifier):
    assert error_code(mockdata.authenticate, identifier, {"password": "fine"}) == "source-locked"
    assert error_code(mockdata.authenticate, identifier, {"password": mockdata.WRONG_PASSWORD}) == "source-locked"


def test_unlocked_identifier_containing_locked_is_fine():
    assert mockdata.authenticate("un-locked@example.com", {"password": "x"})["full_name"]


@pytest.mark.parametrize("payload", [{"password": "x"}, {"password": "x", "code": ""}, {"password": "x", "code": None}])
def test_2fa_account_without_code_requires_one(payload):
    assert error_code(mockdata.authenticate, "2fa@example.com", payload) == "code-required"
    assert error_code(mockdata.authenticate, "2FA-User", payload) == "code-required"


@pytest.mark.parametrize("code", ["123456", 123456, " 123456 "])
def test_2fa_account_with_valid_code_succeeds(code):
    info = mockdata.authenticate("2fa@example.com", {"password": "x", "code": code})
    assert info == mockdata.authenticate("2fa@example.com", {"password": "x", "code": mockdata.VALID_2FA_CODE})
    assert info["full_name"]


@pytest.mark.parametrize("code", ["654321", 12345, "1234567", True, "abc"])
def test_2fa_account_with_wrong_code_fails(code):
    assert error_code(mockdata.authenticate, "2fa@example.com", {"password": "x", "code": code}) == "code-invalid"


def test_wrong_password_is_checked_before_2fa():
    assert error_code(mockdata.authenticate, "2fa@example.com", {"password": mockdata.WRONG_PASSWORD}) == (
        "invalid-credentials"
    )
    payload = {"password": mockdata.WRONG_PASSWORD, "code": "123456"}
    assert error_code(mockdata.authenticate, "2fa@example.com", payload) == "invalid-credentials"


def test_non_2fa_account_ignores_a_code():
    assert mockdata.authenticate(ALICE, {"password": "x", "code": "000000"}) == mockdata.authenticate(ALICE, {})


def test_mock_error_carries_code_and_message():
    error = MockError("source-locked", "The account is locked.")
    assert (error.code, error.message, str(error)) == ("source-locked", "The account is locked.", error.message)
    assert MockError("x").message == "" and str(MockError("x")) == "x"


# --- info documents ------------------------------------------------------------------------------


def test_account_info_document():
    doc = mockdata.info_document("jane.doe@example.com", "account.info")
    assert doc["apple_id"] == "jane.doe@example.com"
    assert (doc["first_name"], doc["last_name"], doc["full_name"]) == ("Jane", "Doe", "Jane Doe")
    assert doc["country"] == mockdata.authenticate("jane.doe@example.com", {})["country"]
    assert parse_time(doc["date_created"]) < datetime(2024, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize("identifier", IDENTIFIERS)
def test_account_devices_document(identifier):
    doc = mockdata.info_document(identifier, "account.devices")
    devices = doc["data"]
    assert 2 <= len(devices) <= 4 and doc["metadata"] == {"count": len(devices)}
    keys = {"id", "name", "model", "model_id", "os_version", "serial", "colour", "last_backup"}
    for device in devices:
        assert set(device) >= keys
        assert isinstance(device["id"], str) and device["id"]
        assert device["model_id"].startswith(device["model"].split(" ")[0])  # "iPhone 14" / "iPhone14,7"
        parse_time(device["last_backup"])
    assert len({d["id"] for d in devices}) == len(devices)


def test_device_counts_span_two_to_four():
    counts = [mockdata.info_document(f"user{n}@example.com", "account.devices")["metadata"]["count"] for n in range(60)]
    assert set(counts) == {2, 3, 4}


def test_entry_counts_span_five_to_twenty():
    counts = {len(mockdata.data_document(f"user{n}@example.com", "safari.history")["data"]) for n in range(120)}
    assert min(counts) == 5 and max(counts) == 20 and len(counts) > 10


def test_mock_account_has_the_most_devices():
    assert mockdata.info_document(mockdata.MOCK_ACCOUNT, "account.devices")["metadata"]["count"] == 4


def test_device_ids_are_stable_per_identifier():
    ids = [d["id"] for d in mockdata.info_document(ALICE, "account.devices")["data"]]
    assert ids == [d["id"] for d in mockdata.info_document(ALICE, "account.devices")["data"]]
    assert set(ids).isdisjoint(d["id"] for d in mockdata.info_document(BOB, "account.devices")["data"])


@pytest.mark.parametrize("info_type", ["account.nope", "", "*", "account.info.extra"])
def test_unknown_info_type(info_type):
    assert error_code(mockdata.info_document, ALICE, info_type) == "invalid-info-type"


# --- data documents ------------------------------------------------------------------------------


def test_catalogue():
    assert mockdata.INFO_TYPES == ("account.info", "account.devices")
    assert len(mockdata.DATA_TYPES) >= 8 and len(set(mockdata.DATA_TYPES)) == len(mockdata.DATA_TYPES)
    assert set(FILE_TYPES) <= set(mockdata.DATA_TYPES)


@pytest.mark.parametrize("identifier", IDENTIFIERS)
@pytest.mark.parametrize("data_type", mockdata.DATA_TYPES)
def test_data_document_shape(identifier, data_type):
    doc = mockdata.data_document(identifier, data_type)
    assert set(doc) == {"data", "metadata"}
    assert doc["metadata"] == {"count": len(doc["data"]), "data_type": data_type}
    assert 5 <= len(doc["data"]) <= 20
    for entry in doc["data"]:
        assert isinstance(entry["id"], str) and entry["id"]
        times = [parse_time(v) for k, v in entry.items() if k in ("date", "modified")]
        assert times and all(t < datetime(2024, 1, 1, tzinfo=UTC) for t in times)
    assert len({entry["id"] for entry in doc["data"]}) == len(doc["data"])
    if data_type in PLAIN_TYPES:
        assert mockdata.list_file_ids(doc) == []
        assert not any({"files", "file", "attachments"} & set(entry) for entry in doc["data"])


def test_mock_account_has_rich_data():
    for data_type in mockdata.DATA_TYPES:
        assert len(mockdata.data_document(mockdata.MOCK_ACCOUNT, data_type)["data"]) == 20
        assert len(mockdata.data_document(mockdata.MOCK_ACCOUNT.upper(), data_type)["data"]) == 20


@pytest.mark.parametrize("identifier", IDENTIFIERS)
def test_photos_entries_carry_image_variants(identifier):
    for entry in mockdata.data_document(identifier, "photos")["data"]:
        assert 1 <= len(entry["files"]) <= 2
        for variant in entry["files"]:
            assert variant["data_type"] == "image"
            assert "." not in variant["name"]
            stem, extension = variant["filename"].rsplit(".", 1)
            assert (stem, extension.lower()) == (variant["name"], variant["extension"])
            assert variant["filepath"].startswith("Media/") and variant["filepath"].endswith("/" + variant["filename"])
            assert variant["extension"] in ("jpg", "heic", "png")
            assert variant["mime_type"].startswith("image/")
            assert len(variant["checksum"]) == 32 and variant["size"] > 0
            assert variant["width"] > 0 and variant["height"] > 0
        original = entry["files"][0]
        assert original["filepath"].startswith("Media/DCIM/100APPLE/")
        if len(entry["files"]) == 2:
            assert entry["files"][1]["width"] < original["width"]


def test_whatsapp_some_entries_have_a_file():
    for identifier in IDENTIFIERS:
        entries = mockdata.data_document(identifier, "whatsapp.messages")["data"]
        with_file = [e for e in entries if "file" in e]
        assert 0 < len(with_file) < len(entries)
        for entry in with_file:
            ref = entry["file"]
            assert ref["data_type"] in ("file", "image")
            assert set(ref) >= {"id", "data_type", "name", "extension", "mime_type", "size", "checksum"}
            if ref["data_type"] == "image":
                assert set(ref) >= {"filename", "filepath", "width", "height"}


@pytest.mark.parametrize("data_type", ["ios_messages.messages", "messages.sms"])
def test_messages_some_entries_have_attachments_some_dtouch(data_type):
    for identifier in IDENTIFIERS:
        entries = mockdata.data_document(identifier, data_type)["data"]
        with_attachments = [e for e in entries if e["attachments"]]
        assert 0 < len(with_attachments) < len(entries)
        attachments = [a for e in with_attachments for a in e["attachments"]]
        for attachment in attachments:
            assert set(attachment) >= {"file_id", "filename", "mime_type", "size"}
        dtouch = [a for a in attachments if "dtouch" in a["file_id"]]
        assert 0 < len(dtouch) < len(attachments)


# --- file references and contents ----------------------------------------------------------------


@pytest.mark.parametrize("identifier", IDENTIFIERS)
@pytest.mark.parametrize("data_type", FILE_TYPES)
def test_client_cascade_finds_fetchable_files(identifier, data_type):
    doc = mockdata.data_document(identifier, data_type)
    refs = file_refs(doc)
    client_ids = parse_file_ids_from_result_data(doc)
    assert client_ids and set(client_ids) <= set(mockdata.list_file_ids(doc))
    assert not any("dtouch" in file_id for file_id in client_ids)
    for file_id in client_ids:
        content, extension = mockdata.file_content(identifier, file_id)
        assert len(content) == refs[file_id]["size"]
        assert hashlib.md5(content).hexdigest() == refs[file_id]["checksum"]


@pytest.mark.parametrize("identifier", IDENTIFIERS)
def test_every_referenced_file_matches_its_reference(identifier):
    for data_type in FILE_TYPES:
        doc = mockdata.data_document(identifier, data_type)
        ids = mockdata.list_file_ids(doc)
        refs = file_refs(doc)
        assert ids and set(ids) == set(refs) and len(ids) == len(set(ids))
        for file_id in ids:
            content, extension = mockdata.file_content(identifier, file_id)
            ref = refs[file_id]
            assert (len(content), hashlib.md5(content).hexdigest()) == (ref["size"], ref["checksum"])
            assert 1024 <= len(content) <= 64 * 1024
            assert extension == extension.lower() and "." not in extension
            if "extension" in ref:
                assert extension == ref["extension"]
            else:
                assert ref["filename"].lower().endswith("." + extension)


def test_list_file_ids_covers_all_variants_in_document_order():
    doc = mockdata.data_document(mockdata.MOCK_ACCOUNT, "photos")
    expected = [variant["id"] for entry in doc["data"] for variant in entry["files"]]
    assert mockdata.list_file_ids(doc) == expected
    assert len(expected) > len(doc["data"])  # some entries have a second variant
    assert mockdata.list_file_ids({"data": [{"id": "x"}], "metadata": {"count": 1}}) == []


def test_file_ids_are_unique_within_a_source():
    ids = [i for t in mockdata.DATA_TYPES for i in mockdata.list_file_ids(mockdata.data_document(ALICE, t))]
    assert len(ids) == len(set(ids))


def png_size(content):
    """Walk a PNG's chunks, checking CRCs and decoding IDAT; returns (width, height)."""
    assert content[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks = 8, {}
    while pos < len(content):
        (length,) = struct.unpack(">I", content[pos : pos + 4])
        kind, data = content[pos + 4 : pos + 8], content[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", content[pos + 8 + length : pos + 12 + length])
        assert crc == zlib.crc32(kind + data)
        chunks[kind] = data
        pos += 12 + length
    assert pos == len(content) and list(chunks)[0] == b"IHDR" and list(chunks)[-1] == b"IEND"
    width, height, depth, colour = struct.unpack(">IIBB", chunks[b"IHDR"][:10])
    assert (depth, colour) == (8, 2)
    assert len(zlib.decompress(chunks[b"IDAT"])) == height * (1 + 3 * width)
    return width, height


def jpeg_markers(content):
    """Walk a JPEG's segments up to the scan; returns the markers seen."""
    assert content[:2] == b"\xff\xd8" and content[-2:] == b"\xff\xd9"
    pos, markers = 2, []
    while True:
        assert content[pos] == 0xFF
        marker = content[pos + 1]
        (length,) = struct.unpack(">H", content[pos + 2 : pos + 4])
        markers.append(marker)
        pos += 2 + length
        if marker == 0xDA:
            return markers


def test_image_files_are_valid_of_their_format():
    seen = set()
    for identifier in IDENTIFIERS:
        for data_type in FILE_TYPES:
            for file_id in mockdata.list_file_ids(mockdata.data_document(identifier, data_type)):
                content, extension = mockdata.file_content(identifier, file_id)
                seen.add(extension)
                if extension == "png":
                    assert png_size(content) == (16, 16)
                elif extension == "jpg":
                    markers = jpeg_markers(content)
                    assert {0xE0, 0xDB, 0xC0, 0xC4} <= set(markers)
                elif extension == "heic":
                    assert content[4:12] == b"ftypheic"
                elif extension == "pdf":
                    assert content.startswith(b"%PDF-") and content.endswith(b"%%EOF\n")
    assert {"png", "jpg", "heic"} <= seen


def test_dtouch_attachments_are_fetchable():
    doc = mockdata.data_document(ALICE, "ios_messages.messages")
    dtouch = [a for e in doc["data"] for a in e["attachments"] if "dtouch" in a["file_id"]]
    assert dtouch
    for attachment in dtouch:
        content, extension = mockdata.file_content(ALICE, attachment["file_id"])
        assert len(content) == attachment["size"] and extension == "png"


def test_files_of_another_identifier_are_not_found():
    for data_type in FILE_TYPES:
        for file_id in mockdata.list_file_ids(mockdata.data_document(ALICE, data_type)):
            assert error_code(mockdata.file_content, BOB, file_id) == "file-not-found"


def test_forged_file_ids_are_not_found():
    real = mockdata.list_file_ids(mockdata.data_document(ALICE, "photos"))[0]
    rest, tag = real.rsplit("-", 1)
    flipped = format(int(tag, 16) ^ 1, "08x")
    forged = [
        f"{rest}-{flipped}",
        f"{rest}-00000000",
        "photo-0-0-00000000",
        "photo-0-0",
        real + "-extra",
        "nope-0-0-" + tag,
        "",
        "dtouch://749301",
        real.upper(),
        "photo-0-0-é€ü",
        # A well-formed, correctly tagged id for an entry that does not exist.
        "photo-99-0-" + mockdata._tag(ALICE, "photo-99-0"),
        "call-0-0-" + mockdata._tag(ALICE, "call-0-0"),
    ]
    for file_id in forged:
        assert error_code(mockdata.file_content, ALICE, file_id) == "file-not-found", file_id
    assert error_code(mockdata.file_content, ALICE, None) == "file-not-found"
    assert mockdata.file_content(ALICE, real)  # the genuine one still works


# --- since / until -------------------------------------------------------------------------------


def test_since_until_filter_inclusively():
    full = mockdata.data_document(mockdata.MOCK_ACCOUNT, "messages.sms")
    dates = sorted(entry["date"] for entry in full["data"])
    since, until = dates[5], dates[14]
    doc = mockdata.data_document(mockdata.MOCK_ACCOUNT, "messages.sms", since=since, until=until)
    kept = [entry["date"] for entry in doc["data"]]
    assert len(kept) == sum(since <= d <= until for d in dates) >= 10
    assert since in kept and until in kept
    assert doc["metadata"]["count"] == len(doc["data"])
    assert (doc["metadata"]["since"], doc["metadata"]["until"]) == (since, until)
    # Entries are the same objects, file ids included, whatever the window.
    assert all(entry in full["data"] for entry in doc["data"])


def test_since_only_and_until_only():
    full = mockdata.data_document(ALICE, "photos")
    middle = sorted(entry["date"] for entry in full["data"])[len(full["data"]) // 2]
    newer = mockdata.data_document(ALICE, "photos", since=middle)["data"]
    older = mockdata.data_document(ALICE, "photos", until=middle)["data"]
    assert all(e["date"] >= middle for e in newer) and all(e["date"] <= middle for e in older)
    assert len(newer) + len(older) == len(full["data"]) + 1  # the middle entry is in both


def test_window_formats_and_empty_window():
    assert mockdata.data_document(ALICE, "call_history.calls", since="2024-01-01T00:00:00Z")["data"] == []
    assert mockdata.data_document(ALICE, "call_history.calls", until="2022-12-31")["data"] == []
    everything = mockdata.data_document(ALICE, "call_history.calls")["data"]
    # Naive datetimes are UTC; offsets are honoured.
    assert mockdata.data_document(ALICE, "call_history.calls", since="2022-12-31T00:00:00")["data"] == everything
    assert mockdata.data_document(ALICE, "call_history.calls", until="2024-01-01T01:00:00+01:00")["data"] == everything


def test_contacts_filter_on_modified():
    full = mockdata.data_document(BOB, "contacts.contacts")["data"]
    newest = max(entry["modified"] for entry in full)
    assert [e["modified"] for e in mockdata.data_document(BOB, "contacts.contacts", since=newest)["data"]] == [newest]


@pytest.mark.parametrize("value", ["yesterday", "2023-13-01", 20230101, ""])
def test_invalid_window_is_rejected(value):
    assert error_code(mockdata.data_document, ALICE, "photos", since=value) == "invalid-parameter"
    assert error_code(mockdata.data_document, ALICE, "photos", until=value) == "invalid-parameter"


# --- pad_to_size ---------------------------------------------------------------------------------


@pytest.mark.parametrize("target", [50_000, 123_457, 1_000_000])
def test_pad_to_size_reaches_the_requested_size(target):
    plain = mockdata.data_document(ALICE, "notes.notes")
    padded = mockdata.data_document(ALICE, "notes.notes", pad_to_size=target)
    assert len(serialise(plain)) < target
    assert len(serialise(padded)) == target
    assert padded["data"] == plain["data"] and padded["metadata"]["count"] == plain["metadata"]["count"]


def test_pad_to_size_below_natural_size_adds_nothing_material():
    plain = mockdata.data_document(ALICE, "photos")
    padded = mockdata.data_document(ALICE, "photos", pad_to_size=10)
    assert padded["metadata"]["padding"] == ""
    assert len(serialise(plain)) <= len(serialise(padded)) < len(serialise(plain)) + 20


def test_pad_to_size_accepts_a_float():
    assert len(serialise(mockdata.data_document(ALICE, "safari.history", pad_to_size=60_000.0))) == 60_000


def test_pad_to_size_with_a_window_and_unicode():
    padded = mockdata.data_document(ALICE, "whatsapp.messages", since="2023-06-01", pad_to_size=80_000)
    assert len(serialise(padded)) == 80_000
    assert json.loads(serialise(padded))["metadata"]["count"] == len(padded["data"])


@pytest.mark.parametrize("value", ["1000", True, [1], -1, float("nan"), float("inf"), mockdata.MAX_PAD_TO_SIZE + 1])
def test_invalid_pad_to_size_is_rejected(value):
    assert error_code(mockdata.data_document, ALICE, "photos", pad_to_size=value) == "invalid-parameter"


# --- unknown types -------------------------------------------------------------------------------


@pytest.mark.parametrize("data_type", ["messages.whatsapp.extra", "account.info", "", "PHOTOS", "photo"])
def test_unknown_data_type(data_type):
    assert error_code(mockdata.data_document, ALICE, data_type) == "invalid-data-type"
