"""deploy/k8s: the kustomization renders, every object is valid for Kubernetes, and what it runs
matches the Procfile, the probes and the documented settings.

Rendering: `kubectl kustomize` (or `kustomize build`) when one is on PATH, and always the small
renderer below, which does what this kustomization uses (resources, labels with selectors, image
tags); with kubectl present both renderings must agree, so the fallback is checked wherever
kubectl is. Validation: `kubernetes-validate` (pinned in requirements-dev.txt), which ships the
Kubernetes JSON schemas and needs no network, in strict mode (unknown fields are errors).
"""
import copy
import re
import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
KUBERNETES_VERSION = "1.32.0"  # the oldest version these manifests are checked against
NAME = "ricloud-server"
CONFIG_FREE_SECRETS = ("AWS_",)  # read by boto3 itself, not settings


def kustomization() -> dict:
    return yaml.safe_load((K8S / "kustomization.yaml").read_text())


def render_python() -> list[dict]:
    """The kustomization, rendered as kustomize does for the fields it uses."""
    spec = kustomization()
    unsupported = set(spec) - {"apiVersion", "kind", "labels", "images", "resources"}
    assert not unsupported, f"the fallback renderer does not do {unsupported}: extend it, or drop them"
    objects = [obj for name in spec["resources"] for obj in yaml.safe_load_all((K8S / name).read_text()) if obj]
    for obj in objects:
        for label in spec.get("labels", []):
            pairs, selectors = label["pairs"], label.get("includeSelectors", False)
            obj["metadata"].setdefault("labels", {}).update(pairs)
            template = obj.get("spec", {}).get("template")
            if template is not None and (selectors or label.get("includeTemplates")):
                template.setdefault("metadata", {}).setdefault("labels", {}).update(pairs)
            if selectors and obj["kind"] == "Service":
                obj["spec"].setdefault("selector", {}).update(pairs)
            if selectors and obj["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet",
                                             "PodDisruptionBudget"):
                obj["spec"].setdefault("selector", {}).setdefault("matchLabels", {}).update(pairs)
        for container in containers(obj):
            for image in spec.get("images", []):
                name, _, tag = container["image"].partition(":")
                if name == image["name"]:
                    container["image"] = f"{image.get('newName', name)}:{image.get('newTag', tag or 'latest')}"
    return objects


def render_tool() -> list[dict] | None:
    for command in (["kubectl", "kustomize", str(K8S)], ["kustomize", "build", str(K8S)]):
        if shutil.which(command[0]):
            done = subprocess.run(command, capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, f"{' '.join(command)} failed:\n{done.stderr}"
            return [obj for obj in yaml.safe_load_all(done.stdout) if obj]
    return None


def containers(obj: dict) -> list[dict]:
    pod = obj.get("spec", {}).get("template", {}).get("spec", {})
    return pod.get("initContainers", []) + pod.get("containers", [])


def by_key(objects: list[dict]) -> dict:
    return {(obj["kind"], obj["metadata"]["name"]): obj for obj in objects}


@pytest.fixture(scope="module")
def rendered() -> dict:
    return by_key(render_python())


def procfile() -> dict[str, str]:
    lines = (ROOT / "Procfile").read_text().splitlines()
    return {name.strip(): command.strip() for name, _, command in (line.partition(":") for line in lines) if command}


def shell_command(container: dict) -> str:
    command = container["command"]
    if command[:2] == ["sh", "-c"]:
        return command[2].removeprefix("exec ")
    return " ".join(command)


def test_the_fallback_renders_what_kubectl_renders(rendered):
    tool = render_tool()
    if tool is None:
        pytest.skip("neither kubectl nor kustomize on PATH: the fallback rendering is what the rest checks")
    assert by_key(tool) == rendered


def test_every_object_is_valid_for_kubernetes(rendered):
    documents = list(rendered.values()) + [yaml.safe_load((K8S / "secret.example.yaml").read_text())]
    assert {kind for kind, _ in rendered} == {"ConfigMap", "Deployment", "Service", "Job", "PodDisruptionBudget"}
    for obj in documents:
        try:
            kubernetes_validate.validate(copy.deepcopy(obj), KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{obj['kind']}/{obj['metadata']['name']}: {exc.message} at {list(exc.path)}")


def test_a_schema_violation_is_caught(rendered):
    broken = copy.deepcopy(rendered[("Deployment", f"{NAME}-web")])
    broken["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGet"]["pathh"] = "/health"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_web_probes_and_service(rendered):
    web = rendered[("Deployment", f"{NAME}-web")]
    container = web["spec"]["template"]["spec"]["containers"][0]
    assert "command" not in container, "web runs the image's CMD (the Procfile's web line)"
    port = container["ports"][0]
    assert container["livenessProbe"]["httpGet"] == {"path": "/health", "port": port["name"]}
    assert container["readinessProbe"]["httpGet"] == {"path": "/ready", "port": port["name"]}
    assert {"name": "PORT", "value": str(port["containerPort"])} in container["env"]
    service = rendered[("Service", f"{NAME}-web")]
    assert service["spec"]["ports"][0]["targetPort"] == port["name"]
    assert service["spec"]["selector"] == web["spec"]["template"]["metadata"]["labels"]
    for kind, name in rendered:
        if kind == "Deployment":
            deployment = rendered[(kind, name)]
            labels = deployment["spec"]["template"]["metadata"]["labels"]
            assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
            budget = rendered.get(("PodDisruptionBudget", name))
            if budget is not None:
                assert budget["spec"]["selector"] == deployment["spec"]["selector"], name


def test_worker_and_beat_run_the_procfile_lines(rendered):
    lines = procfile()
    worker = rendered[("Deployment", f"{NAME}-worker")]["spec"]["template"]["spec"]["containers"][0]
    assert shell_command(worker) == lines["worker"]
    beat = rendered[("Deployment", f"{NAME}-beat")]
    assert beat["spec"]["replicas"] == 1 and beat["spec"]["strategy"]["type"] == "Recreate"
    assert shell_command(beat["spec"]["template"]["spec"]["containers"][0]) == lines["beat"]
    migrate = rendered[("Job", f"{NAME}-migrate")]["spec"]["template"]["spec"]["containers"][0]
    assert migrate["command"] == ["python", "manage.py", "migrate", "--noinput"]


def test_every_container_has_resources_and_the_settings(rendered):
    config = rendered[("ConfigMap", NAME)]
    for (kind, name), obj in rendered.items():
        for container in containers(obj):
            where = f"{kind}/{name} {container['name']}"
            assert container["image"] == f"{NAME}:{kustomization()['images'][0]['newTag']}", where
            resources = container.get("resources", {})
            assert set(resources.get("requests", {})) == {"cpu", "memory"}, where
            assert set(resources.get("limits", {})) == {"cpu", "memory"}, where
            assert container["securityContext"]["readOnlyRootFilesystem"] is True, where
            sources = container.get("envFrom", [])
            assert {"configMapRef": {"name": config["metadata"]["name"]}} in sources, where
            assert {"secretRef": {"name": NAME}} in sources, where


def test_the_settings_named_are_documented_and_secrets_stay_out(rendered):
    documented = set(re.findall(r"`([A-Z][A-Z0-9_]+)`", (ROOT / "README.md").read_text()))
    config = rendered[("ConfigMap", NAME)]["data"]
    secret = yaml.safe_load((K8S / "secret.example.yaml").read_text())["stringData"]
    for name in [*config, *secret]:
        assert name in documented or name.startswith(CONFIG_FREE_SECRETS), f"{name} is not a documented setting"
    for name in ("DATABASE_URL", "CELERY_BROKER_URL", "REDIS_URL", "SECRET_KEY", "RICLOUD_ENCRYPTION_KEYS"):
        assert name in secret and name not in config, name
    assert "secret.example.yaml" not in kustomization()["resources"], "the example Secret must not be applied"
    assert not any(kind == "Secret" for kind, _ in rendered)
    assert all("REPLACE-ME" in value or re.search(r"USER|HOST", value) for value in secret.values()), secret
