import os

from django.core.asgi import get_asgi_application

from tasks_app.sealing import require_keys

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ricloud_server.settings")
application = get_asgi_application()
require_keys()  # credentials are stored encrypted: no key, no server (tasks_app/sealing.py)
