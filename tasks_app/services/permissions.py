"""Permission scopes (`<type>:<value>` with `*` wildcards) and count limits.

An organisation's base permissions (identifier `default`) bound everything; a key's or a user's
own permissions, when they have any, narrow them further. A request needs its scopes allowed at
every level. Count limits (`{"level", "type": "count", "value"}`) on `source_type` scopes cap
the number of sources of that type per organisation, key or user.
"""
from fnmatch import fnmatchcase

from .. import authcache
from ..authcache import bump
from ..errors import APIError
from ..models import Key, Organisation, Permissions, Source, User

__all__ = [
    "DEFAULT_SCOPES",
    "SCOPE_TYPES",
    "create_default_permissions",
    "create_permissions",
    "update_permissions",
    "require_scopes",
    "check_source_limits",
]

SCOPE_TYPES = ("source_type", "task_type", "data_type", "file_type")
DEFAULT_SCOPES = {f"{scope_type}:*": [] for scope_type in SCOPE_TYPES}


def create_default_permissions(organisation: Organisation) -> Permissions:
    return Permissions.objects.create(organisation=organisation, identifier="default", scopes=DEFAULT_SCOPES)


def _validate_scopes(organisation_id, scopes: dict, *, base: bool) -> dict:
    errors = []
    for scope, limits in scopes.items():
        scope_type, _, value = scope.partition(":")
        if scope_type not in SCOPE_TYPES or not value:
            errors.append(f"{scope}: expected <{'|'.join(SCOPE_TYPES)}>:<value>.")
        if not isinstance(limits, list) or not all(_valid_limit(limit) for limit in limits):
            errors.append(f"{scope}: limits must be a list of {{level, type: count, value}} objects.")
    ceiling = _org_scopes(organisation_id)
    if not base and not errors and ceiling is not None:
        errors += [f"{scope}: exceeds the organisation's permissions." for scope in scopes
                   if not any(fnmatchcase(scope, allowed) for allowed in ceiling)]
    if errors:
        raise APIError("invalid-parameter", "One or more parameters failed validation.", params={"scopes": errors})
    return scopes


def _valid_limit(limit) -> bool:
    return (isinstance(limit, dict) and limit.get("level") in ("organisation", "key", "user")
            and limit.get("type") == "count" and isinstance(limit.get("value"), int) and limit["value"] >= 0)


def _org_scopes(organisation_id) -> dict | None:
    rows = Permissions.objects.filter(organisation_id=organisation_id, key__isnull=True, user__isnull=True)
    merged = None
    for scopes in rows.values_list("scopes", flat=True):
        merged = {**(merged or {}), **scopes}
    return merged


def create_permissions(*, key: Key, identifier: str, scopes: dict, for_key: Key | None = None,
                       for_user: User | None = None) -> Permissions:
    base = for_key is None and for_user is None
    _validate_scopes(key.organisation_id, scopes, base=base)
    return Permissions.objects.create(organisation_id=key.organisation_id, identifier=identifier, scopes=scopes,
                                      key=for_key, user=for_user)


def update_permissions(*, permissions: Permissions, identifier: str | None = None, scopes: dict | None = None) -> Permissions:
    if scopes is not None:
        _validate_scopes(permissions.organisation_id, scopes,
                         base=permissions.key_id is None and permissions.user_id is None)
    changes = {name: value for name, value in (("identifier", identifier), ("scopes", scopes)) if value is not None}
    if changes:
        Permissions.objects.filter(id=permissions.id).update(**changes)
        bump()
        permissions.refresh_from_db()
    return permissions


def _levels(key: Key, user: User | None) -> list[tuple[str, dict]]:
    """The scope sets that must each allow a request: organisation, then key and user if narrowed."""
    current = getattr(key, "auth_generation", None) or authcache.generation()
    rows = authcache.cached(
        ("permissions", key.organisation_id), current,
        lambda: list(Permissions.objects.filter(organisation_id=key.organisation_id).values_list(
            "key_id", "user_id", "scopes")))
    levels = {"organisation": None, "key": None, "user": None}  # None: nothing narrows this level
    for key_id, user_id, scopes in rows:
        if key_id is None and user_id is None:
            levels["organisation"] = {**(levels["organisation"] or {}), **scopes}
        elif key_id == key.id and user_id is None:
            levels["key"] = {**(levels["key"] or {}), **scopes}
        elif user is not None and user_id == user.id:
            levels["user"] = {**(levels["user"] or {}), **scopes}
    return [(level, scopes) for level, scopes in levels.items() if scopes is not None]


def _matching(scopes: dict, wanted: str) -> list[str]:
    return [scope for scope in scopes if fnmatchcase(wanted, scope)]


def require_scopes(*, key: Key, user: User | None, wanted: list[str]) -> None:
    """403 `missing-scope` unless every wanted scope is allowed at every level."""
    for level, scopes in _levels(key, user):
        for scope in wanted:
            if not _matching(scopes, scope):
                raise APIError("missing-scope", f"The {level} lacks the permission scope {scope}.", status_code=403,
                               params={"scope": [scope]})


def check_source_limits(*, key: Key, user: User, source_type: str) -> None:
    """403 `limit-exceeded` if one more source of this type would break a count limit."""
    counts = {
        "organisation": Source.objects.filter(organisation_id=key.organisation_id, type=source_type),
        "key": Source.objects.filter(user__key_id=key.id, type=source_type),
        "user": Source.objects.filter(user_id=user.id, type=source_type),
    }
    for _, scopes in _levels(key, user):
        for scope in _matching(scopes, f"source_type:{source_type}"):
            for limit in scopes[scope]:
                if counts[limit["level"]].count() >= limit["value"]:
                    raise APIError(
                        "limit-exceeded",
                        f"The {limit['level']} may have at most {limit['value']} {source_type} sources.",
                        status_code=403,
                    )


