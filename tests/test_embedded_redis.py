"""The embedded default's Redis launcher never removes the socket of a running instance."""
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def launch(var_dir):
    return subprocess.run([sys.executable, "-m", "ricloud_server.embedded_redis"], cwd=ROOT, capture_output=True,
                          text=True, timeout=30, env={"PATH": "/usr/bin:/bin", "RICLOUD_VAR_DIR": str(var_dir),
                                                      "DJANGO_SETTINGS_MODULE": "ricloud_server.settings"})


def test_a_live_socket_is_left_alone(tmp_path):
    path = tmp_path / "redis.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(str(path))
        server.listen(1)
        outcome = launch(tmp_path)
        assert outcome.returncode != 0 and "in use by a running instance" in outcome.stderr
        assert path.exists()


def test_a_stale_socket_is_replaced(tmp_path):
    from ricloud_server.embedded_redis import socket_is_live

    path = tmp_path / "redis.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.close()  # the file stays, nobody listens: what a killed instance leaves
    assert path.exists() and not socket_is_live(str(path))
