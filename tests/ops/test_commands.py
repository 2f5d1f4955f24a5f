"""The key and organisation commands, and the fixed demo token, as an operator uses them: each
token printed works against the API at once, and one that was rotated or deactivated stops."""
import io

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from tasks_app.models import Key, Organisation
from tasks_app.services.organisations import create_organisation

pytestmark = pytest.mark.django_db


def run(*args) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def last_line(output: str) -> str:
    return output.strip().splitlines()[-1]


def authorised(client, token: str) -> int:
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    return client.get("/key").status_code


def test_createkey_prints_a_working_token_last(anon):
    organisation, first = create_organisation(name="Acme")
    output = run("createkey", str(organisation.id), "--retrieval-protocol", "asstore")
    token = last_line(output)
    key = Key.objects.exclude(id=first.id).get(organisation=organisation)
    assert output.startswith(f"Created key {key.id} for organisation {organisation.id} (Acme).\n")
    assert key.retrieval_protocol == "asstore" and f": {key.stream}\n" in output
    assert authorised(anon, token) == 200 and anon.get("/key").json()["id"] == key.id

    given = last_line(run("createkey", str(organisation.id), "--token", "a-fixed-token-0123456789"))
    assert given == "a-fixed-token-0123456789" and authorised(anon, given) == 200
    with pytest.raises(CommandError, match="already exists"):
        run("createkey", str(organisation.id), "--token", "a-fixed-token-0123456789")
    with pytest.raises(CommandError, match="at least 16"):
        run("createkey", str(organisation.id), "--token", "short")
    with pytest.raises(CommandError, match="No organisation 987654"):
        run("createkey", "987654")


def test_rotatekey_replaces_the_token_at_once(anon):
    _, key = create_organisation(name="Acme")
    old = key.plaintext_token
    output = run("rotatekey", str(key.id))
    new = last_line(output)
    assert new != old and "the old token no longer works" in output
    assert authorised(anon, new) == 200
    assert authorised(anon, old) == 401
    with pytest.raises(CommandError, match="No key 987654"):
        run("rotatekey", "987654")


def test_deactivatekey_stops_the_token_at_once(anon):
    _, key = create_organisation(name="Acme")
    assert authorised(anon, key.plaintext_token) == 200
    assert run("deactivatekey", str(key.id)) == f"Deactivated key {key.id} of organisation {key.organisation_id}.\n"
    assert authorised(anon, key.plaintext_token) == 401
    assert run("deactivatekey", str(key.id)) == f"Key {key.id} was already deactivated.\n"
    with pytest.raises(CommandError, match="only an active key"):
        run("rotatekey", str(key.id))


def test_listkeys_shows_no_token():
    acme, acme_key = create_organisation(name="Acme")
    other, other_key = create_organisation(name="Other Ltd")
    run("deactivatekey", str(other_key.id))
    listing = run("listkeys")
    lines = listing.splitlines()
    assert lines[0].split() == ["ID", "ORGANISATION", "NAME", "STATE", "RETRIEVAL", "STREAM", "CREATED"]
    rows = {int(line.split()[0]): line for line in lines[1:]}
    assert rows[acme_key.id].split()[:6] == [str(acme_key.id), str(acme.id), "Acme", "active", "aschannel",
                                             acme_key.stream]
    assert "deactivated" in rows[other_key.id] and "Other Ltd" in rows[other_key.id]
    assert acme_key.plaintext_token not in listing and acme_key.token_hash not in listing
    only = run("listkeys", "--organisation", str(acme.id)).splitlines()
    assert [int(line.split()[0]) for line in only[1:]] == [acme_key.id]
    with pytest.raises(CommandError, match="No organisation"):
        run("listkeys", "--organisation", "987654")


def test_listorganisations_counts_keys():
    acme, key = create_organisation(name="Acme")
    run("createkey", str(acme.id))
    run("deactivatekey", str(key.id))
    lines = run("listorganisations").splitlines()
    assert lines[0].split() == ["ID", "NAME", "STATE", "KEYS", "ACTIVE", "KEYS", "CREATED"]
    row = next(line for line in lines[1:] if int(line.split()[0]) == acme.id)
    assert row.split()[:5] == [str(acme.id), "Acme", Organisation.objects.get(id=acme.id).state, "1", "2"]


def test_createorganisation_with_a_token_is_unchanged(anon):
    token = last_line(run("createorganisation", "Fixture", "--token", "fixture-token-abcdefghij"))
    assert token == "fixture-token-abcdefghij" and authorised(anon, token) == 200


def test_demo_with_a_fixed_token(settings, tmp_path, monkeypatch, anon):
    settings.VAR_DIR = tmp_path
    run("demo")  # a random token first, as a fresh `make run` would
    random_token = (tmp_path / "demo-token").read_text().strip()
    monkeypatch.setenv("RICLOUD_DEMO_TOKEN", "my-demo-token-0123456789")
    output = run("demo")
    assert "Authorization: Token my-demo-token-0123456789" in output
    assert (tmp_path / "demo-token").read_text() == "my-demo-token-0123456789\n"
    assert run("demo") == output  # nothing more is created
    assert Organisation.objects.filter(name="Demo").count() == 1  # the fixed token joins the demo organisation
    assert authorised(anon, "my-demo-token-0123456789") == 200 and authorised(anon, random_token) == 200

    monkeypatch.setenv("RICLOUD_DEMO_TOKEN", "short")
    with pytest.raises(CommandError, match="RICLOUD_DEMO_TOKEN"):
        run("demo")


def test_demo_with_a_fixed_token_on_a_fresh_database(settings, tmp_path, monkeypatch, anon):
    settings.VAR_DIR = tmp_path
    monkeypatch.setenv("RICLOUD_DEMO_TOKEN", "fresh-demo-token-0123456789")
    run("demo")
    assert Organisation.objects.filter(name="Demo").count() == 1
    assert authorised(anon, "fresh-demo-token-0123456789") == 200


def test_make_run_turns_rate_limits_off():
    from pathlib import Path

    makefile = (Path(__file__).resolve().parents[2] / "Makefile").read_text()
    run_recipe = makefile.split("\nrun:", 1)[1].split("\n\n", 1)[0]
    assert 'RICLOUD_RATE_LIMIT_ORGANISATION="$(RICLOUD_RATE_LIMIT_ORGANISATION)"' in run_recipe
    assert 'RICLOUD_RATE_LIMIT_KEY="$(RICLOUD_RATE_LIMIT_KEY)"' in run_recipe
    assert "\nRICLOUD_RATE_LIMIT_ORGANISATION ?=\n" in makefile and "\nRICLOUD_RATE_LIMIT_KEY ?=\n" in makefile
