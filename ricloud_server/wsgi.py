import os

from django.core.wsgi import get_wsgi_application

from tasks_app.sealing import require_keys

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ricloud_server.settings")
application = get_wsgi_application()
require_keys()  # credentials are stored encrypted: no key, no server (tasks_app/sealing.py)
