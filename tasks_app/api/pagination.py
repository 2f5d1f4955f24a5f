"""Cursor pagination per API.md §1.8: `limit` (default 10, max 1000), `after_id`, `before_id`.

Lists are ordered newest first by primary key (integer ids grow; UUIDs are version 7, so time
ordered). `after_id` continues with older items, `before_id` returns the items just newer than it.
"""
from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import exceptions
from rest_framework.pagination import BasePagination
from rest_framework.response import Response

__all__ = ["CursorPagination", "list_envelope", "DEFAULT_LIMIT", "MAX_LIMIT"]

DEFAULT_LIMIT = 10
MAX_LIMIT = 1000


def list_envelope(data, *, url: str, has_more: bool = False, total_count: int | None = None) -> dict:
    return {
        "resource": "list",
        "data": data,
        "has_more": has_more,
        "total_count": len(data) if total_count is None else total_count,
        "url": url,
    }


def _parse_limit(raw) -> int:
    if raw is None or raw == "":
        return DEFAULT_LIMIT
    try:
        limit = int(raw)
    except (TypeError, ValueError):
        raise exceptions.ValidationError({"limit": ["A whole number is required."]}) from None
    if not 1 <= limit <= MAX_LIMIT:
        raise exceptions.ValidationError({"limit": [f"Must be between 1 and {MAX_LIMIT}."]})
    return limit


def _parse_id(model, name: str, raw):
    try:
        return model._meta.pk.to_python(raw)
    except (DjangoValidationError, ValueError, TypeError):
        raise exceptions.ValidationError({name: ["Not a valid id."]}) from None


class CursorPagination(BasePagination):
    def paginate_queryset(self, queryset, request, view=None):
        params = request.query_params
        limit = _parse_limit(params.get("limit"))
        model = queryset.model
        self.url = request.path
        count = getattr(view, "count", None)
        self.total_count = count(queryset) if count else queryset.count()
        narrow = getattr(view, "narrow", None)
        if narrow:
            queryset = narrow(queryset)
        if params.get("before_id"):
            before = _parse_id(model, "before_id", params["before_id"])
            items = list(queryset.filter(pk__gt=before).order_by("pk")[: limit + 1])
            self.has_more = len(items) > limit
            return list(reversed(items[:limit]))
        if params.get("after_id"):
            queryset = queryset.filter(pk__lt=_parse_id(model, "after_id", params["after_id"]))
        items = list(queryset.order_by("-pk")[: limit + 1])
        self.has_more = len(items) > limit
        return items[:limit]

    def get_paginated_response(self, data):
        return Response(list_envelope(data, url=self.url, has_more=self.has_more, total_count=self.total_count))
