"""The Dockerfile, read (no Docker engine runs where the suite does): the image installs the
runtime requirements only, keeps its /health HEALTHCHECK and runs the Procfile's web line."""
import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def instructions(name: str) -> list[str]:
    joined = re.sub(r"\\\n\s*", " ", DOCKERFILE)
    return [line.split(None, 1)[1] for line in joined.splitlines() if line.startswith(name + " ")]


def test_the_image_installs_the_runtime_requirements_only():
    installs = [step for step in instructions("RUN") if "pip install" in step]
    assert installs == ["pip install -r requirements-runtime.txt"], installs
    assert "COPY requirements-runtime.txt ./" in [f"COPY {step}" for step in instructions("COPY")]


def test_the_healthcheck_asks_health_and_the_command_is_the_procfiles_web_line():
    (healthcheck,) = instructions("HEALTHCHECK")
    assert "/health" in healthcheck
    (command,) = instructions("CMD")
    shell = json.loads(command)
    assert shell[:2] == ["sh", "-c"]
    procfile = dict(line.split(": ", 1) for line in (ROOT / "Procfile").read_text().splitlines() if ": " in line)
    assert shell[2].removeprefix("exec ") == procfile["web"]
