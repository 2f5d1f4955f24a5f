"""`Authorization: Token <key token>` authentication against hashed key tokens."""
from rest_framework import authentication, exceptions

from .. import authcache
from ..choices import KeyState, OrganisationState
from ..models import Key, Organisation, hash_token
from ..ratelimit import retry_after

__all__ = ["TokenAuthentication", "authenticate_token"]


def authenticate_token(header: str | None) -> Key:
    """Resolve an Authorization header to an active key, or raise AuthenticationFailed."""
    if not header:
        raise exceptions.NotAuthenticated("Authentication credentials were not provided.")
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() not in ("token", "bearer") or not token:
        raise exceptions.AuthenticationFailed("Invalid Authorization header; expected 'Token <key token>'.")
    key = _key(hash_token(token))
    if key is None:
        raise exceptions.AuthenticationFailed("Invalid token.")
    if key.state != KeyState.ACTIVE:
        raise exceptions.AuthenticationFailed(f"This key is {key.state}.")
    if key.organisation.state in (OrganisationState.DEACTIVATED, OrganisationState.BLOCKED):
        raise exceptions.AuthenticationFailed(f"This organisation is {key.organisation.state}.")
    return key


KEY_FIELDS = [field.attname for field in Key._meta.concrete_fields]
ORGANISATION_FIELDS = [field.attname for field in Organisation._meta.concrete_fields]


def _load(token_hash: str):
    key = Key.objects.select_related("organisation").filter(token_hash=token_hash).first()
    if key is None:
        return None
    return ({name: getattr(key, name) for name in KEY_FIELDS},
            {name: getattr(key.organisation, name) for name in ORGANISATION_FIELDS})


def _key(token_hash: str) -> Key | None:
    """The key of a token hash with its organisation: from the process cache when still current."""
    current = authcache.generation()
    values = authcache.cached(("key", token_hash), current, lambda: _load(token_hash))
    if values is None:
        return None
    key = Key(**values[0])
    key.auth_generation = current  # later cache reads of this request need not ask Redis again
    key._state.adding = False
    key.organisation = Organisation(**values[1])
    key.organisation._state.adding = False
    return key


class TokenAuthentication(authentication.BaseAuthentication):
    def authenticate(self, request):
        key = authenticate_token(request.META.get("HTTP_AUTHORIZATION"))
        wait = retry_after(key)
        if wait is not None:
            raise exceptions.Throttled(wait=wait, detail="Rate limit exceeded.")  # DRF adds the wait once
        return key, key

    def authenticate_header(self, request) -> str:
        # Makes DRF answer 401 (not 403) when credentials are missing.
        return "Token"
