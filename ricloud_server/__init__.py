from .celery import app as celery_app

__version__ = "0.9.0"  # GET /version, /health and /ready answer it (tasks_app/ops.py)

__all__ = ["celery_app", "__version__"]
