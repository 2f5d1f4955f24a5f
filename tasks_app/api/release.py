"""Breaking the reference cycles of a finished API request, so reference counting frees it.

DRF links a response to its view and request and back (`renderer_context`, `parser_context`,
`view.request`), a serializer to its fields and back (`field.parent`), its data to itself
(`ReturnDict.serializer`), and Django's prefetch_related links related objects to their instance.
Left to the cyclic garbage collector, every API request was ~130 objects of garbage: under load a
web process collected several times a second, and each full collection paused it 60-150 ms, the
tail of `POST /polls` latency (docs/DECISIONS.md 141). Nothing here runs before the response is
rendered.
"""
from rest_framework.serializers import BaseSerializer

__all__ = ["release", "unbind"]


def unbind(serializer) -> None:
    """Drop what a serializer holds (its fields, nested serializers, instance and data)."""
    state = serializer.__dict__
    for field in (state.get("_fields") or {}).values():
        if isinstance(field, BaseSerializer):
            unbind(field)
        child = field.__dict__.get("child")
        if isinstance(child, BaseSerializer):
            unbind(child)
    child = state.get("child")
    if isinstance(child, BaseSerializer):
        unbind(child)
    instance = state.get("instance")
    instances = getattr(instance, "_result_cache", None) or instance
    for obj in instances if isinstance(instances, list | tuple) else (instances,):
        getattr(obj, "__dict__", {}).pop("_prefetched_objects_cache", None)
    state.clear()


def release(response) -> None:
    """Once `response` is rendered: break what links it, its view, its request and its data."""
    context = getattr(response, "renderer_context", None)
    if not context:
        return
    view, request = context.get("view"), context.get("request")
    serializer = getattr(getattr(response, "data", None), "serializer", None)
    if serializer is not None:
        unbind(serializer)
    if request is not None and isinstance(getattr(request, "parser_context", None), dict):
        request.parser_context.clear()
    if view is not None:
        view.__dict__.clear()
    context.clear()
