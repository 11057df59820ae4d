"""The package's import graph, read with ast: every import counts, function-local and
TYPE_CHECKING ones too (a lazy import is still a dependency of the code that runs it)."""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

from tests.conftest import REPO

PACKAGES = ("visionpipe", "stages")


def module_file(name: str) -> str | None:
    """The repo-relative file of module ``name`` (a package: its __init__.py)."""
    base = REPO / Path(*name.split("."))
    for cand in (base.with_suffix(".py"), base / "__init__.py"):
        if cand.is_file():
            return cand.relative_to(REPO).as_posix()
    return None


def _packages_of(path: str) -> list[str]:
    """The __init__.py files Python runs before the module at ``path``."""
    parts = Path(path).parts[:-1]
    inits = [Path(*parts[: i + 1], "__init__.py").as_posix() for i in range(len(parts))]
    return [p for p in inits if p != path and (REPO / p).is_file()]


@cache
def direct_imports(path: str) -> frozenset[str]:
    """Files of the package that ``path`` imports (and the packages those live in)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse((REPO / path).read_text())):
        names: list[str] = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        for name in names:
            if name.split(".")[0] in PACKAGES and (target := module_file(name)):
                found.add(target)
                found.update(_packages_of(target))
    found.discard(path)
    return frozenset(found)


def closure(*paths: str) -> set[str]:
    """Every file the modules at ``paths`` load, themselves and their packages included."""
    seen: set[str] = set()
    todo = [p for path in paths for p in (path, *_packages_of(path))]
    while todo:
        current = todo.pop()
        if current not in seen:
            seen.add(current)
            todo.extend(direct_imports(current))
    return seen


def package_files() -> list[str]:
    return sorted(
        p.relative_to(REPO).as_posix()
        for package in PACKAGES
        for p in (REPO / package).rglob("*.py")
        if "__pycache__" not in p.parts
    )
