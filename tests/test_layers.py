"""The layers of docs/architecture.md, checked on the import graph of the source.

Every import counts, wherever it is written: at the top, inside a function, or under
``TYPE_CHECKING`` (a cycle hidden in a function is still a cycle).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).parents[1] / "src"
PACKAGE = SRC / "aiproject"


@dataclass(frozen=True)
class Import:
    """One imported module or name, with where it was written."""

    module: str  # the importing module
    target: str  # the imported module (absolute)
    name: str | None  # the name taken from it (``from target import name``)
    line: int


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_module(dotted: str) -> bool:
    path = SRC.joinpath(*dotted.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _imports(source: str, module: str, is_package: bool) -> list[Import]:
    found: list[Import] = []
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [Import(module, alias.name, None, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                dotted = f"{base}.{alias.name}"
                if _is_module(dotted):  # ``from package import module``
                    found.append(Import(module, dotted, None, node.lineno))
                else:
                    found.append(Import(module, base, alias.name, node.lineno))
    return found


def _private_attributes(source: str, module: str, is_package: bool) -> list[str]:
    """Return ``alias._name`` uses where ``alias`` is one of our modules imported here."""
    aliases: dict[str, str] = {}
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            for item in _imports(ast.unparse(node), module, is_package):
                if item.name is None and item.target.startswith("aiproject."):
                    alias = next(a for a in node.names if item.target.endswith(a.name))
                    aliases[alias.asname or alias.name] = item.target
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname and alias.name.startswith("aiproject."):
                    aliases[alias.asname] = alias.name
    return [
        f"{aliases[node.value.id]}.{node.attr}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id in aliases
        and node.attr.startswith("_")
        and not node.attr.startswith("__")
    ]


def _all_imports() -> list[Import]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        source = path.read_text(encoding="utf-8")
        found += _imports(source, _module_name(path), path.name == "__init__.py")
    return found


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def test_the_api_layer_never_imports_the_doctor_or_the_command_line() -> None:
    wrong = [
        f"{i.module}:{i.line} imports {i.target}"
        for i in _all_imports()
        if _within(i.module, "aiproject.api")
        and any(_within(i.target, p) for p in ("aiproject.doctor", "aiproject.cli"))
    ]
    assert wrong == []


def test_the_doctor_asks_the_domain_not_the_api() -> None:
    wrong = [
        f"{i.module}:{i.line} imports {i.target}"
        for i in _all_imports()
        if i.module == "aiproject.doctor" and _within(i.target, "aiproject.api")
    ]
    assert wrong == []


@pytest.mark.parametrize(
    ("layer", "forbidden"),
    [
        ("aiproject.domain", ("aiproject.api", "fastapi", "starlette", "aiortc", "uvicorn")),
        ("aiproject.engines", ("aiproject.api", "aiproject.domain", "fastapi", "starlette")),
        ("aiproject.store", ("aiproject.api", "aiproject.domain", "fastapi", "starlette")),
    ],
)
def test_data_flows_one_way(layer: str, forbidden: tuple[str, ...]) -> None:
    """api -> domain -> engines/store; the domain never sees request objects."""
    wrong = [
        f"{i.module}:{i.line} imports {i.target}"
        for i in _all_imports()
        if _within(i.module, layer) and any(_within(i.target, f) for f in forbidden)
    ]
    assert wrong == []


def test_no_module_takes_a_private_name_of_another() -> None:
    """``from aiproject.x import _name`` or ``x._name``: a private is private to its module."""
    wrong = [
        f"{i.module}:{i.line} imports {i.target}.{i.name}"
        for i in _all_imports()
        if i.name is not None
        and i.name.startswith("_")
        and not i.name.startswith("__")
        and i.target.startswith("aiproject")
        and i.target != i.module
    ]
    for path in sorted(PACKAGE.rglob("*.py")):
        module = _module_name(path)
        source = path.read_text(encoding="utf-8")
        uses = _private_attributes(source, module, path.name == "__init__.py")
        wrong += [f"{module} uses {use}" for use in uses]
    assert wrong == []


def test_the_checks_see_what_they_forbid() -> None:
    """The import reader finds imports inside functions, relative ones and private reaches."""
    source = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from aiproject.doctor import Check\n"
        "def f():\n"
        "    from ..doctor import run\n"
        "    from aiproject.api import lingxi\n"
        "    return lingxi._request, run, Check\n"
        "from aiproject.api.lingxi import _bearer\n"
    )
    found = _imports(source, "aiproject.api.surfaces", is_package=False)
    ours = {(i.target, i.name) for i in found if i.target.startswith("aiproject")}
    assert ours == {
        ("aiproject.doctor", "Check"),
        ("aiproject.api.lingxi", "_bearer"),
        ("aiproject.doctor", "run"),
        ("aiproject.api.lingxi", None),
    }
    assert _private_attributes(source, "aiproject.api.surfaces", False) == [
        "aiproject.api.lingxi._request"
    ]
