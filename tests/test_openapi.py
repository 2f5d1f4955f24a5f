"""The OpenAPI contract at /schema and Swagger UI at /docs stay true to the routes.

The fuzz pass (tests/e2e/test_openapi_fuzz.py) checks every response against the contract; these
tests check that the contract lists exactly what is served: every endpoint of docs/COVERAGE.md,
every route of the URLconf and every method a route answers.
"""
import re

import pytest
import yaml
from django.urls import URLPattern, URLResolver, get_resolver, resolve
from openapi_spec_validator import validate

from asapi_app.catalogue import SERVICES

from .test_coverage_doc import ROWS

pytestmark = pytest.mark.django_db

# Routes that are not API operations: the contract itself, its viewer, the test-backend reset
# (an operating endpoint, like /health) and the JSON 404.
META_ROUTES = {"^schema/?$", "^docs/?$", "^docs/assets/(?P<name>[^/]+)$", "^_ricloud/reset/?$", "^.*$"}
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


@pytest.fixture
def contract(anon):
    response = anon.get("/schema")
    assert response.status_code == 200, response.content
    return response.json()


def operations(contract) -> set[tuple[str, str]]:
    return {(method.upper(), path) for path, item in contract["paths"].items() for method in item}


def sample(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "987654", path)  # no such object (POST /keys/{id}/rotate must not rotate ours)


def test_the_schema_is_public_valid_openapi_3_whatever_debug_says(anon, settings):
    settings.DEBUG = False
    response = anon.get("/schema")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/json")
    schema = response.json()
    assert schema["openapi"].startswith("3.0")
    validate(schema)


def test_yaml_is_the_same_contract(anon, contract):
    response = anon.get("/schema", {"format": "yaml"})
    assert response["Content-Type"].startswith("application/yaml")
    assert yaml.safe_load(response.content) == contract


def test_every_endpoint_of_the_coverage_document_and_nothing_else(contract):
    implemented = {(method, re.sub(r"\{\w+\}", "{id}", path)) for method, path, status in ROWS if status == "implemented"}
    listed = {(method, re.sub(r"\{\w+\}", "{id}", path)) for method, path in operations(contract)}
    assert listed == implemented


def _routes(patterns, prefix=""):
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            yield from _routes(pattern.url_patterns, prefix + str(pattern.pattern))
        elif isinstance(pattern, URLPattern):
            yield prefix + str(pattern.pattern)


def test_every_route_of_the_urlconf_is_in_the_schema(contract):
    # The Django admin (ricloud_server/adminsite.py) is an operator's HTML site, not the API.
    routes = {route for route in _routes(get_resolver().url_patterns) if not route.startswith("admin/")} - META_ROUTES
    reached = {resolve(sample(path)).route for path in contract["paths"]}
    assert routes <= reached, f"routes the schema does not list: {sorted(routes - reached)}"


def test_every_method_a_route_answers_is_in_the_schema(api, contract):
    served = set()
    for path in contract["paths"]:
        for method in METHODS:
            response = api.generic(method, sample(path), "{}" if method != "GET" else "", content_type="")
            if response.status_code != 405:
                served.add((method, path))
    assert served == {(method, path) for method, path in operations(contract) if method in METHODS}


def test_every_operation_is_secured_by_the_token_and_documents_its_errors(contract):
    assert contract["components"]["securitySchemes"]["token"]["name"] == "Authorization"
    for path, item in contract["paths"].items():
        for method, operation in item.items():
            # A download URL's signature is its credential (tasks_app/downloads.py): no token.
            assert operation.get("security") == (None if path == "/results/{id}/download" else [{"token": []}]), \
                (method, path)
            assert {"400", "401", "429", "503"} <= set(operation["responses"]), (method, path)
            assert operation["x-api-generation"] == ("v2" if path.endswith("/") or "/fetch/" in path else "v3")


def test_awaiting_operations_document_the_header(contract):
    awaiting = {(method.upper(), path) for path, item in contract["paths"].items() for method, operation in item.items()
                if any(parameter.get("name") == "Ricloud-Await" for parameter in operation.get("parameters", []))}
    assert awaiting == {
        ("POST", "/sessions"), ("POST", "/polls"), ("POST", "/subscriptions"), ("POST", "/tasks"), ("POST", "/configs/webhook"),
        ("POST", "/configs/webhook/{id}/test"), ("POST", "/configs/storage"), ("POST", "/configs/storage/{id}/test"),
    }


def test_the_v2_actions_are_the_catalogue(contract):
    body = contract["paths"]["/submit-task/"]["post"]["requestBody"]["content"]["application/x-www-form-urlencoded"]
    assert body["schema"]["properties"]["action"]["enum"] == [action.slug for action in SERVICES[0].actions]
    parameters = {parameter.slug for service in SERVICES for action in service.actions for parameter in action.parameters}
    assert parameters <= set(body["schema"]["properties"])
    assert set(contract["components"]["schemas"]["V2Service"]["enum"]) == {SERVICES[0].slug, SERVICES[0].name}


def test_the_docs_page_loads_swagger_ui_from_this_server(anon, settings):
    settings.DEBUG = False
    response = anon.get("/docs")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/html")
    page = response.content.decode()
    assets = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert {"/docs/assets/swagger-ui-bundle.js", "/docs/assets/swagger-ui.css"} <= set(assets)
    assert '"/schema"' in page
    for asset in assets:
        assert asset.startswith("/docs/assets/"), asset  # nothing from a CDN
        served = anon.get(asset)
        assert served.status_code == 200 and b"".join(served.streaming_content), asset


@pytest.mark.parametrize("path", ["/docs/assets/LICENSE", "/docs/assets/oauth2-redirect.html", "/docs/assets/..%2F..%2Fviews.py"])
def test_only_the_swagger_ui_files_are_served(anon, path):
    response = anon.get(path)
    assert response.status_code == 404 and response.json()["error"] == "not-found"


@pytest.mark.parametrize("path", ["/schema", "/docs", "/docs/assets/swagger-ui.css"])
def test_the_schema_and_docs_answer_other_methods_in_the_envelope(anon, path):
    response = anon.post(path)
    assert response.status_code == 405 and response.json()["error"] == "method-not-allowed"
    assert response["Allow"] == "GET, HEAD"
