"""The package's floors: which part may import which (shared/DESIGN.md), checked on every import
statement of every module, those inside functions included. An import that runs back up a floor
fails here with the file, the line and the rule it breaks."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

import ddpm_lib

PACKAGE = Path(ddpm_lib.__file__).parent

# Each module's part, by its dotted name (the longest matching prefix wins).
PARTS = {
    "ddpm_lib.paths": "bottom", "ddpm_lib.device": "bottom", "ddpm_lib.transforms": "bottom",
    "ddpm_lib.study": "bottom", "ddpm_lib.utils": "bottom", "ddpm_lib.identity": "bottom",
    "ddpm_lib.math": "math", "ddpm_lib.models": "models", "ddpm_lib.data": "data",
    "ddpm_lib.config": "settings", "ddpm_lib.engine": "engine", "ddpm_lib.evaluation": "evaluation",
    "ddpm_lib.show": "show",
    "ddpm_lib.build": "wiring", "ddpm_lib.experiment": "wiring", "ddpm_lib.pipeline": "wiring",
    "ddpm_lib.colab": "wiring", "ddpm_lib.__main__": "wiring", "ddpm_lib": "wiring",
}
# What each part may import. The math takes any network as a callable; the networks know tensors;
# the data knows files and arrays; the settings read name lists from below; the engine is handed its
# network and callbacks; scoring takes runs by their `sample` method; showing draws what it is given;
# only the wiring sees everything.
ALLOWED = {
    "bottom": {"bottom"},
    "math": {"bottom", "math"},
    "models": {"bottom", "models"},
    "data": {"bottom", "data"},
    "settings": {"bottom", "math", "models", "data", "settings"},
    "engine": {"bottom", "math", "settings", "engine"},
    "evaluation": {"bottom", "math", "data", "evaluation"},
    "show": {"bottom", "show"},
    "wiring": {"bottom", "math", "models", "data", "settings", "engine", "evaluation", "show", "wiring"},
}


def part_of(module: str) -> str:
    matches = [prefix for prefix in PARTS if module == prefix or module.startswith(prefix + ".")]
    return PARTS[max(matches, key=len)]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(source: str, name: str, is_package: bool) -> list[tuple[int, str]]:
    """(line, module) of every ddpm_lib import in ``source``; ``from x import y`` counts y when it is a
    module, relative imports resolved against ``name``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".")
                anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                found.append((node.lineno, candidate if _is_module(candidate) else base))
    return [(line, module) for line, module in found if module == "ddpm_lib" or module.startswith("ddpm_lib.")]


def _is_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def violations(source: str, name: str, is_package: bool = False) -> list[str]:
    """The imports of module ``name`` (its ``source``) that its part may not make."""
    own = part_of(name)
    return [f"{name}:{line} imports {target} ({part_of(target)}); {own} may import {sorted(ALLOWED[own])}"
            for line, target in imported_modules(source, name, is_package)
            if part_of(target) not in ALLOWED[own]]


def test_no_module_imports_up_a_floor():
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        found += violations(path.read_text(), module_name(path), path.name == "__init__.py")
    assert not found, "\n".join(found)


@pytest.mark.parametrize("source, name", [
    ("from ddpm_lib.experiment import Run", "ddpm_lib.math.sampling"),  # the math reaching for the wiring
    ("def f():\n    from ddpm_lib.show.viz import image_grid", "ddpm_lib.engine.train"),  # hidden in a function
    ("from ..data import cub", "ddpm_lib.models.blocks"),  # relative, networks reading files
    ("import ddpm_lib.config", "ddpm_lib.math.diffusion"),  # the math reading the settings
])
def test_the_check_catches_a_forbidden_import(source, name):
    assert violations(source, name), "the check let a forbidden import through"


def test_every_module_has_a_part_and_the_public_names_resolve():
    for path in PACKAGE.rglob("*.py"):
        assert part_of(module_name(path)) in ALLOWED
    for name in ddpm_lib.__all__:
        assert getattr(ddpm_lib, name) is not None, name
    with pytest.raises(AttributeError, match="no attribute 'Nonesuch'"):
        ddpm_lib.Nonesuch  # noqa: B018
