"""Read by gunicorn from its working directory (the Procfile's and the image's `web` command run
in the checkout): the web process's hooks and logging, ricloud_server/gunicorn_conf.py."""
from ricloud_server.gunicorn_conf import child_exit, logconfig_dict, on_starting  # noqa: F401
