"""Errors that services raise and the API renders as `{"error", "message", "params"}`."""
from rest_framework import exceptions

__all__ = ["APIError"]


class APIError(exceptions.APIException):
    """An error with an explicit ricloud error code."""

    def __init__(self, code: str, message: str, *, status_code: int = 400, params: dict | None = None):
        super().__init__(detail=message, code=code)
        self.status_code = status_code
        self.error_code = code
        self.message = message
        self.params = params
