"""`GET /results/{id}/download`: a local result's file, for whoever holds its signed URL.

The URL comes from the result's `signed_url` (tasks_app/downloads.py). No token: the signature is
the credential, so the request is neither authenticated nor rate limited per key. A missing or
wrong signature is a 403 `invalid-signature`, an expiry in the past a 410 `url-expired` (both
before the database is read, so an id alone tells nothing), a result gone from the store a 410
`result-expired`. Files of the local store are sent with FileResponse; objects of the server's
own S3 store are read by this process and streamed on, so the store need not be reachable by clients.
"""
import mimetypes
import time

from django.http import FileResponse, HttpResponse, StreamingHttpResponse
from django.utils.http import content_disposition_header
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.views import APIView

from ..choices import ResultState
from ..downloads import local_path, own_s3, verify
from ..errors import APIError
from ..models import Result

__all__ = ["ResultDownloadView"]

CHUNK = 64 * 1024


def content_type(result_type: str | None) -> str:
    if result_type == "json":
        return "application/json"
    guessed, _ = mimetypes.guess_type(f"file.{result_type}") if result_type else (None, None)
    return guessed or "application/octet-stream"


class ResultDownloadView(APIView):
    authentication_classes = ()
    permission_classes = ()

    @extend_schema(
        operation_id="results_download", auth=[],
        description="A local result's stored bytes, for whoever holds the URL of its `signed_url` (no token).",
        parameters=[
            OpenApiParameter("id", OpenApiTypes.UUID, OpenApiParameter.PATH),
            OpenApiParameter("expires", OpenApiTypes.INT, required=True, description="Unix time the URL expires at."),
            OpenApiParameter("signature", OpenApiTypes.STR, required=True, description="The URL's signature."),
        ],
        responses={(200, "*/*"): OpenApiResponse(OpenApiTypes.BINARY, description="The result's bytes: "
                                                 "`application/json` for a data result, else its file type.")},
    )
    def get(self, request, pk):
        expires, given = request.query_params.get("expires", ""), request.query_params.get("signature", "")
        if not (expires.isascii() and expires.isdigit() and len(expires) <= 12 and given.isascii()
                and verify(pk, int(expires), given)):
            raise APIError("invalid-signature", "The download URL is not valid; take a new one from the result.",
                           status_code=403)
        if int(expires) < time.time():
            raise APIError("url-expired", "The download URL has expired; take a new one from the result.",
                           status_code=410)
        result = (Result.objects.filter(pk=pk).only("id", "url", "type", "identifier", "checksum", "state", "content")
                  .first())
        if result is not None and own_s3(result.url):
            response = self.from_s3(result)
        elif result is not None and result.url.startswith("inline:"):
            response = self.from_row(result)
        else:
            response = self.from_disk(result)
        response["ETag"] = f'"{result.checksum}"'
        response["Cache-Control"] = "private, no-store"
        return response

    @staticmethod
    def from_row(result) -> HttpResponse:
        """A small v2 result kept in its row (Result.content)."""
        if result.state == ResultState.EXPIRED or result.content is None:
            raise APIError("result-expired", "The result has been deleted from storage.", status_code=410)
        response = HttpResponse(bytes(result.content), content_type=content_type(result.type))
        response["Content-Disposition"] = content_disposition_header(True, result.identifier)
        return response

    @staticmethod
    def from_disk(result) -> FileResponse:
        path = local_path(result.url) if result is not None else None
        if result is None or path is None:
            raise APIError("not-found", "No such resource.", status_code=404)
        if result.state == ResultState.EXPIRED or not path.is_file():
            raise APIError("result-expired", "The result has been deleted from storage.", status_code=410)
        return FileResponse(path.open("rb"), content_type=content_type(result.type), as_attachment=True,
                            filename=result.identifier)

    @staticmethod
    def from_s3(result) -> StreamingHttpResponse:
        """Streamed through this process: the store may be reachable only from the server's network."""
        from botocore.exceptions import ClientError

        from workers.publishers.storage import get_storage

        storage = get_storage(None)
        bucket, key = storage._split(result.url)
        try:
            stored = None if result.state == ResultState.EXPIRED else storage.client.get_object(Bucket=bucket, Key=key)
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") not in ("NoSuchKey", "404"):
                raise
            stored = None
        if stored is None:
            raise APIError("result-expired", "The result has been deleted from storage.", status_code=410)
        response = StreamingHttpResponse(stored["Body"].iter_chunks(CHUNK), content_type=content_type(result.type))
        response["Content-Length"] = str(stored["ContentLength"])
        response["Content-Disposition"] = content_disposition_header(True, result.identifier)
        return response
