"""`POST /_ricloud/reset` (docs/DECISIONS.md 110-111): the test-backend reset, an operating
endpoint like /health (not an API operation of the reference, so not in /schema).

Enabled by RICLOUD_RESET_ENABLED (on for the embedded default and `make run`, off otherwise);
disabled it is the JSON 404 of an unknown path. It needs a valid key's token (`Token` or
`Bearer`), any organisation's: the reset clears every organisation's data.
"""
from django.conf import settings
from drf_spectacular.utils import extend_schema
from rest_framework.response import Response
from rest_framework.views import APIView

from ..services.reset import reset_data
from .errors import not_found_view

__all__ = ["ResetView"]


class ResetView(APIView):
    def dispatch(self, request, *args, **kwargs):
        if not settings.RICLOUD_RESET_ENABLED:
            return not_found_view(request)
        return super().dispatch(request, *args, **kwargs)

    @extend_schema(exclude=True)
    def post(self, request):
        return Response(reset_data())
