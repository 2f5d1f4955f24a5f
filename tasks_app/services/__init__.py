"""Every write of the domain. APIs and Celery tasks call these; nothing else changes state."""
