"""Every third-party package the product's code imports is named in requirements.txt itself,
not only installed as another package's dependency (which may drop it in any release)."""
import ast
import re
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PRODUCT = ["ricloud_server", "tasks_app", "asapi_app", "workers"]


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def imported_top_levels() -> dict[str, str]:
    found = {}
    for package in PRODUCT:
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                names = []
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                for name in names:
                    found.setdefault(name.split(".")[0], str(path.relative_to(ROOT)))
    return found


def named_requirements() -> set[str]:
    names = set()
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line and not line.startswith("-"):
            names.add(normalise(re.split(r"[\[=<>~! ;]", line, maxsplit=1)[0]))
    return names


def test_every_imported_distribution_is_named():
    distributions = packages_distributions()
    named = named_requirements()
    missing = {}
    for module, where in imported_top_levels().items():
        if module in sys.stdlib_module_names or module in PRODUCT:
            continue
        owners = {normalise(name) for name in distributions.get(module, [module])}
        if not owners & named:
            missing[module] = (where, sorted(owners))
    assert not missing, f"imported by the product but not named in requirements.txt: {missing}"
