"""What OPTIONS answers on v3 endpoints (imported by DRF while it defines APIView: keep it light)."""
from rest_framework.metadata import SimpleMetadata

__all__ = ["OptionsMetadata"]


class OptionsMetadata(SimpleMetadata):
    """OPTIONS names the view, what it parses and renders, and where the contract is. DRF's default
    also describes the fields of the view's serializer, which here is the read side (bodies are
    validated by the `*Input` serializers) and cannot be built for the hand-rendered ones: OPTIONS
    /polls was a 500 (found by the fuzz pass)."""

    def determine_actions(self, request, view):
        return {}

    def determine_metadata(self, request, view):
        return {**super().determine_metadata(request, view), "schema": "/schema"}
