"""Every module-level import of a third-party package is a runtime dependency.

``make test`` installs the test extras as well, so a package listed only there would pass
every other test and still break ``make serve``; this reads the imports instead.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _name(requirement: str) -> str:
    return re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def runtime_closure() -> set[str]:
    """Return the declared runtime distributions and everything they require."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pending = [_name(requirement) for requirement in project["dependencies"]]
    closure: set[str] = set()
    while pending:
        name = pending.pop()
        if name in closure:
            continue
        closure.add(name)
        try:
            requirements = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue  # required only on other platforms, so not installed here
        for requirement in requirements:
            if "extra ==" not in requirement:
                pending.append(_name(requirement))
    return closure


def module_level_imports() -> dict[str, Path]:
    """Return top-level package names imported at module level in src/enclave."""
    found: dict[str, Path] = {}
    for path in (ROOT / "src" / "enclave").rglob("*.py"):
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.split(".")[0], path)
    return found


def test_module_imports_are_runtime_dependencies() -> None:
    distributions = metadata.packages_distributions()
    closure = runtime_closure()
    missing = []
    for package, path in sorted(module_level_imports().items()):
        if package in sys.stdlib_module_names or package in ("enclave", "__future__"):
            continue
        owners = {_name(owner) for owner in distributions.get(package, [package])}
        if not owners & closure:
            missing.append(f"{package} (imported in {path.relative_to(ROOT)})")
    assert missing == [], "add to [project] dependencies: " + ", ".join(missing)
