"""`poll_create_input` (the fast path of POST /polls validation) accepts only what PollCreateInput
accepts, and gives the same validated data; anything else is left to PollCreateInput."""
import json

import pytest

from tasks_app.api.inputs import PollCreateInput, poll_create_input

SESSION = "01a20db5-0675-7023-a79e-39458c22bf60"


def plain(value):
    return json.loads(json.dumps(value, default=str))


BODIES = [
    {"session": SESSION, "payload": {"info_types": ["account.info"]}},
    {"session": SESSION, "payload": {"info_types": ["*"], "data_types": ["photos", "notes"], "files": ["a/b.jpg"]}},
    {"session": SESSION.upper(), "payload": {"data_types": []}},
    {"session": "{" + SESSION + "}", "payload": {}},
    {"session": "urn:uuid:" + SESSION, "payload": {"files": ["x"]}},
    {"session": SESSION.replace("-", ""), "payload": {"files": ["x"]}},
    {"session": "not-a-uuid", "payload": {"info_types": ["a"]}},
    {"session": 12, "payload": {"info_types": ["a"]}},
    {"session": SESSION, "payload": {"info_types": [" padded "]}},
    {"session": SESSION, "payload": {"info_types": [""]}},
    {"session": SESSION, "payload": {"info_types": ["x" * 255]}},
    {"session": SESSION, "payload": {"info_types": ["x" * 256]}},
    {"session": SESSION, "payload": {"info_types": ["nul\x00"]}},
    {"session": SESSION, "payload": {"info_types": ["café"]}},
    {"session": SESSION, "payload": {"info_types": [1]}},
    {"session": SESSION, "payload": {"info_types": "account.info"}},
    {"session": SESSION, "payload": {"info_types": ["a"] * 1000}},
    {"session": SESSION, "payload": {"info_types": ["a"] * 1001}},
    {"session": SESSION, "payload": {"since": "2020-01-01T00:00:00Z", "info_types": ["a"]}},
    {"session": SESSION, "payload": {"mock": {"delay": 1}, "info_types": ["a"]}},
    {"session": SESSION, "payload": []},
    {"session": SESSION},
    {"session": SESSION, "payload": {"info_types": ["a"]}, "source": None},
    {"subscription": SESSION, "payload": {"info_types": ["a"]}},
    [],
    "text",
]


@pytest.mark.parametrize("body", BODIES, ids=range(len(BODIES)))
def test_the_fast_path_agrees_with_the_serializer(body):
    serializer = PollCreateInput(data=body)
    valid = serializer.is_valid()
    fast = poll_create_input(body)
    if fast is not None:
        assert valid, serializer.errors  # never accepts what the serializer refuses
        assert plain(fast) == plain(serializer.validated_data)


def test_the_fast_path_takes_the_usual_bodies():
    assert poll_create_input(BODIES[0]) is not None and poll_create_input(BODIES[1]) is not None
