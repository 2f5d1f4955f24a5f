"""`ricloud-server`: the console script of the installed package (pyproject.toml).

    ricloud-server run                   web + worker + beat on the embedded default, like `make run` ($PORT)
    ricloud-server web [gunicorn args]   the Procfile's `web` (gunicorn, uvicorn workers, $PORT)
    ricloud-server worker [celery args]  the Procfile's `worker`
    ricloud-server beat [celery args]    the Procfile's `beat`
    ricloud-server migrate               manage.py migrate --noinput
    ricloud-server manage CMD [ARGS]     any manage.py command (createorganisation, listkeys, ...)
    ricloud-server version

Configuration is the environment, as everywhere (README "Configuration"). State lives in
RICLOUD_VAR_DIR, default `var/` of the working directory for an installed package. The roles
replace this process (exec), so a container's or supervisor's signals reach gunicorn or Celery
directly; `run` supervises its children and stops them all when one stops or on Ctrl-C/SIGTERM.
"""
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["main", "role_argv"]

USAGE = __doc__.split("\n\n")[1]
ROLES = ("web", "worker", "beat")
STOP_GRACE_SECONDS = 20


def role_argv(role: str, *extra: str, host: str = "0.0.0.0", port: str | None = None,
              web_concurrency: str | None = None, worker_concurrency: str | None = None) -> list[str]:
    """The command of a process role (the Procfile's line), run by this interpreter. An option given
    in `extra` (`--bind`, `--workers`, `--concurrency`, ...) replaces the default one."""
    if role == "web":
        port = port or os.environ.get("PORT") or "8000"
        workers = web_concurrency or os.environ.get("WEB_CONCURRENCY") or "2"
        return [sys.executable, "-m", "gunicorn", "ricloud_server.serve:application",
                *_unless(extra, ("-b", "--bind"), "--bind", f"{host}:{port}"),
                *_unless(extra, ("-k", "--worker-class"), "--worker-class", "uvicorn_worker.UvicornWorker"),
                *_unless(extra, ("-w", "--workers"), "--workers", workers),
                *_unless(extra, ("--access-logfile",), "--access-logfile", "-"),
                # The hooks (metrics' multiprocess directory); gunicorn.conf.py of a checkout reads them too.
                *_unless(extra, ("-c", "--config"), "--config", "python:ricloud_server.gunicorn_conf"), *extra]
    if role == "worker":
        concurrency = worker_concurrency or os.environ.get("WORKER_CONCURRENCY") or "4"
        return [sys.executable, "-m", "celery", "-A", "ricloud_server", "worker",
                *_unless(extra, ("-Q", "--queues"), "--queues", "tasks,webhooks"),
                *_unless(extra, ("-c", "--concurrency"), "--concurrency", concurrency),
                *_unless(extra, ("-l", "--loglevel"), "--loglevel", "INFO"), *extra]
    if role == "beat":
        # The schedule file goes to CELERY_BEAT_SCHEDULE_FILENAME (RICLOUD_VAR_DIR) unless given.
        return [sys.executable, "-m", "celery", "-A", "ricloud_server", "beat",
                *_unless(extra, ("-l", "--loglevel"), "--loglevel", "INFO"), *extra]
    raise ValueError(f"unknown role {role!r}")


def _unless(extra: tuple[str, ...], flags: tuple[str, ...], *default: str) -> tuple[str, ...]:
    given = any(arg in flags or arg.startswith(tuple(f + "=" for f in flags if f.startswith("--"))) for arg in extra)
    return () if given else default


def _setup_env() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ricloud_server.settings")
    # Pinned here, once, so that every child of `run` agrees on it whatever its working directory.
    from django.conf import settings

    os.environ.setdefault("RICLOUD_VAR_DIR", str(settings.VAR_DIR))
    # The SQLite file, the embedded socket and beat's schedule go there: the directory must exist.
    Path(settings.VAR_DIR).mkdir(parents=True, exist_ok=True)


def manage(*args: str) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ricloud_server.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(["ricloud-server manage", *args])


def _wait_for_socket(path: str, process: subprocess.Popen, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"ricloud-server: the embedded redis-server exited with code {process.returncode}")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            try:
                probe.connect(path)
                return
            except OSError:
                time.sleep(0.1)
    sys.exit(f"ricloud-server: the embedded redis-server did not listen on {path} within {timeout:.0f}s")


def _stop(processes: dict[str, subprocess.Popen]) -> None:
    """SIGTERM to web, worker and beat together, then to redis once they are gone (so that they do
    not see their broker vanish while stopping); SIGKILL to any still running after the grace."""
    for group in ([p for name, p in processes.items() if name != "redis"], [processes.get("redis")]):
        group = [process for process in group if process is not None]
        for process in group:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for process in group:
            try:
                process.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def run() -> int:
    """The embedded default, as `make run`: redis (unless CELERY_BROKER_URL is set), the demo
    organisation (its curl line printed), web on 127.0.0.1:$PORT, worker and beat, until one stops
    or we are told to."""
    port = os.environ.setdefault("PORT", "8000")
    # As `make run`: webhooks to a local receiver allowed, no rate limits unless asked for.
    os.environ.setdefault("RICLOUD_WEBHOOK_ALLOW_PRIVATE", "1")
    os.environ.setdefault("RICLOUD_RATE_LIMIT_ORGANISATION", "")
    os.environ.setdefault("RICLOUD_RATE_LIMIT_KEY", "")
    _setup_env()
    from django.conf import settings

    processes: dict[str, subprocess.Popen] = {}

    def on_signal(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    try:
        if not os.environ.get("CELERY_BROKER_URL"):
            processes["redis"] = subprocess.Popen([sys.executable, "-m", "ricloud_server.embedded_redis"])
            _wait_for_socket(str(settings.EMBEDDED_REDIS_SOCKET), processes["redis"])
        subprocess.run([sys.executable, "-m", "ricloud_server.cli", "manage", "demo", "--migrate"], check=True)
        processes["web"] = subprocess.Popen(role_argv("web", host="127.0.0.1", port=port, web_concurrency="1"))
        processes["worker"] = subprocess.Popen(role_argv("worker", worker_concurrency="2"))
        processes["beat"] = subprocess.Popen(role_argv("beat"))
        while True:
            for name, process in processes.items():
                if process.poll() is not None:
                    print(f"ricloud-server: {name} exited with code {process.returncode}; stopping", file=sys.stderr)
                    return process.returncode or 1
            time.sleep(0.5)
    except KeyboardInterrupt:
        return 0
    except subprocess.CalledProcessError as exc:
        return exc.returncode
    finally:
        _stop(processes)


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0 if args else 2
    command, rest = args[0], args[1:]
    if command == "version":
        from ricloud_server import __version__

        print(__version__)
        return 0
    if command == "run":
        return run()
    if command in ROLES:
        _setup_env()
        argv = role_argv(command, *rest)
        sys.stdout.flush()
        os.execv(argv[0], argv)
    if command == "migrate":
        _setup_env()
        manage("migrate", "--noinput", *rest)
        return 0
    if command == "manage":
        _setup_env()
        manage(*rest)
        return 0
    print(f"ricloud-server: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
