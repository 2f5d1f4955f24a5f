"""The asmaster manager endpoints (the 2.x client's manager mode): form POSTs, v2 envelope.

Authentication, the method check, rate limits and the error envelope are the asapi's
(asapi_app.views.v2_view); answers are documented in docs/DECISIONS.md (asmaster, 80-).
"""
from functools import wraps

from django.http import JsonResponse
from django.views.decorators.debug import sensitive_post_parameters

from asapi_app.catalogue import SERVICES, find_service
from asapi_app.views import V2Error, _public_base, _required, v2_view

from . import services
from .models import Account, AccountState

__all__ = ["list_services", "list_subscriptions", "subscribe_account", "perform_2fa_challenge",
           "submit_2fa_challenge", "list_devices", "subscribe_device", "unsubscribe_device",
           "resubscribe_account", "unsubscribe_account", "reset_subscription_since"]


def asmaster_view(*methods):
    def decorator(view):
        @v2_view(*methods)
        @wraps(view)
        def wrapper(request, *args, **kwargs):
            try:
                body = view(request, *args, **kwargs)
            except services.AsmasterError as exc:
                return JsonResponse({"success": False, "error": exc.message,
                                     "errors": {exc.field: [[exc.message, exc.code]]}},
                                    status=exc.status)
            return JsonResponse({"success": True, **body})

        return wrapper

    return decorator


def _service(request):
    service = find_service(request.POST.get("service"))
    if service is None:
        raise V2Error("service", "invalid_service")
    return service


def _account(request) -> Account:
    return services.find_account(request.key, _required(request, "account_id"))


@asmaster_view("POST")
def list_services(request):
    protocol, host = _public_base(request)
    return {
        "services": [service.describe() for service in SERVICES],
        "stream_endpoints": [{"host": host, "protocol": protocol, "uri": "/stream/"}],
        "retrieval_protocol": request.key.retrieval_protocol,
        "stream": request.key.stream,
    }


@asmaster_view("POST")
def list_subscriptions(request):
    service = _service(request)
    rows = Account.objects.select_related("key").filter(key=request.key, service=service.slug).order_by("id")
    found = []
    for account in rows:
        services.settle(account)
        found.append(services.render_account(account))
    return {"service": service.slug, "accounts": found,
            "subscribed": sum(1 for account in found if account["status"] != AccountState.UNSUBSCRIBED)}


@sensitive_post_parameters("password")
@asmaster_view("POST")
def subscribe_account(request):
    service = _service(request)
    username = _required(request, "username")
    password = _required(request, "password")
    return services.subscribe_account(request.key, service, username, password)


@asmaster_view("POST")
def perform_2fa_challenge(request):
    account = _account(request)
    return services.perform_2fa_challenge(account, _required(request, "device_id"))


@sensitive_post_parameters("code")
@asmaster_view("POST")
def submit_2fa_challenge(request):
    account = _account(request)
    return services.submit_2fa_challenge(account, _required(request, "code"))


@asmaster_view("POST")
def list_devices(request):
    return services.list_devices(_account(request))


@asmaster_view("POST")
def subscribe_device(request):
    account = _account(request)
    return services.subscribe_device(account, _required(request, "device_id"))


@asmaster_view("POST")
def unsubscribe_device(request):
    account = _account(request)
    return services.unsubscribe_device(account, _required(request, "device_id"))


@sensitive_post_parameters("password")
@asmaster_view("POST")
def resubscribe_account(request):
    account = _account(request)
    return services.resubscribe_account(account, _required(request, "password"))


@asmaster_view("POST")
def unsubscribe_account(request):
    return services.unsubscribe_account(_account(request))


@asmaster_view("POST")
def reset_subscription_since(request):
    account = _account(request)
    value = _required(request, "datetime")
    since = services.parse_since(value)
    if since is None:
        raise V2Error("datetime", "invalid", f"Invalid value for parameter 'datetime': {value}")
    return services.reset_since(account, since)
