"""`Authorization: Token <key token>` authentication against hashed key tokens.

Failed authentication is limited per client address (RICLOUD_RATE_LIMIT_FAILED_AUTH): once an
address has presented that many bad credentials in the window, every request from it that
presents credentials is a 429 until the window ends, without its token being looked at. Requests
without credentials are a plain 401 and are not counted (they cost nothing to refuse).
"""
from rest_framework import authentication, exceptions

from .. import authcache
from ..choices import KeyState, OrganisationState
from ..models import Key, Organisation, hash_token
from ..ratelimit import client_address, count_failed_auth, failed_auth_wait, retry_after
from ..services.rows import instance

__all__ = ["TokenAuthentication", "authenticate_token", "authenticate_request"]

FAILED_AUTH_MESSAGE = "Too many failed authentication attempts from this address."


def authenticate_request(meta) -> Key:
    """The active key of a request's Authorization header (`meta`: request.META). Raises
    NotAuthenticated, AuthenticationFailed, or Throttled when its address failed too often."""
    header = meta.get("HTTP_AUTHORIZATION")
    if not header:
        return authenticate_token(header)  # NotAuthenticated: not counted
    address = client_address(meta)
    read = {}

    def read_with_generation(name):  # the address's counter and the auth cache generation: one round trip
        read["generation"], value = authcache.generation_and(name)
        return value

    wait = failed_auth_wait(address, read=read_with_generation)
    if wait is not None:
        raise exceptions.Throttled(wait=wait, detail=FAILED_AUTH_MESSAGE)
    try:
        return authenticate_token(header, current=read.get("generation", UNREAD))
    except exceptions.AuthenticationFailed:
        wait = count_failed_auth(address)
        if wait is not None:
            raise exceptions.Throttled(wait=wait, detail=FAILED_AUTH_MESSAGE) from None
        raise


UNREAD = object()


def authenticate_token(header: str | None, current=UNREAD) -> Key:
    """Resolve an Authorization header to an active key, or raise AuthenticationFailed.
    `current`: the auth cache generation when the caller has read it already."""
    if not header:
        raise exceptions.NotAuthenticated("Authentication credentials were not provided.")
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() not in ("token", "bearer") or not token:
        raise exceptions.AuthenticationFailed("Invalid Authorization header; expected 'Token <key token>'.")
    key = _key(hash_token(token), current)
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


def _key(token_hash: str, current=UNREAD) -> Key | None:
    """The key of a token hash with its organisation: from the process cache when still current."""
    if current is UNREAD:
        current = authcache.generation()
    values = authcache.cached(("key", token_hash), current, lambda: _load(token_hash))
    if values is None:
        return None
    key = instance(Key, values[0])
    key.auth_generation = current  # later cache reads of this request need not ask Redis again
    key.organisation = instance(Organisation, values[1])
    return key


class TokenAuthentication(authentication.BaseAuthentication):
    def authenticate(self, request):
        key = authenticate_request(request.META)
        wait = retry_after(key)
        if wait is not None:
            raise exceptions.Throttled(wait=wait, detail="Rate limit exceeded.")  # DRF adds the wait once
        return key, key

    def authenticate_header(self, request) -> str:
        # Makes DRF answer 401 (not 403) when credentials are missing.
        return "Token"
