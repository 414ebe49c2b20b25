"""The shape of the package: no import cycle, the engine names no task and no model family, and
every config field is declared in one class (the layers themselves: import-linter, run by `make test`)."""

from __future__ import annotations

import ast
import dataclasses
import importlib
import importlib.util
import inspect
import re
import sys
from pathlib import Path

import grimp

from typoattack.tasks.registry import list_task_names

PACKAGE = Path(__file__).resolve().parents[1] / "typoattack"


def find_import_cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), i.e. the import cycles."""
    imports = {m: graph.find_modules_directly_imported_by(m) for m in graph.modules}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for imported in imports[module]:
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            component = []
            while (top := stack.pop()) != module:
                component.append(top)
            if component:
                cycles.append(sorted([module, *component]))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(imports)))
    for module in sorted(imports):
        if module not in index:
            visit(module)
    return cycles


def test_find_import_cycles_finds_a_cycle() -> None:
    graph = grimp.ImportGraph()
    for name in ("pkg", "pkg.a", "pkg.b", "pkg.c"):
        graph.add_module(name)
    graph.add_import(importer="pkg.a", imported="pkg.b")
    graph.add_import(importer="pkg.b", imported="pkg.c")
    assert find_import_cycles(graph) == []
    graph.add_import(importer="pkg.c", imported="pkg.a")
    assert find_import_cycles(graph) == [["pkg.a", "pkg.b", "pkg.c"]]


def test_no_import_cycle() -> None:
    """Runtime imports only: an import under `if TYPE_CHECKING:` cannot fail at import time."""
    assert find_import_cycles(grimp.build_graph("typoattack", exclude_type_checking_imports=True)) == []


def test_the_engine_names_no_task_and_no_model_family() -> None:
    names = [*list_task_names(), "synthetic", "open_clip", "transformers"]
    for path in sorted((PACKAGE / "engine").glob("*.py")):
        code = re.sub(r'""".*?"""', "", path.read_text(), flags=re.S)  # docstrings may mention them
        for name in names:
            assert not re.search(rf"[\"'.]{name}\b", code), f"{path.name} names {name!r}"


def test_each_config_field_is_declared_once() -> None:
    import typoattack.config.attack
    import typoattack.config.common
    import typoattack.config.datasets
    from typoattack.tasks.registry import get_tasks

    classes = {cls for module in (typoattack.config.common, typoattack.config.attack, typoattack.config.datasets)
               for _, cls in inspect.getmembers(module, inspect.isclass) if dataclasses.is_dataclass(cls)
               and cls.__module__ == module.__name__}
    for task in get_tasks().values():
        config_class = inspect.signature(task._config_loader).return_annotation
        module = __import__(task._config_loader.__module__, fromlist=["_"])
        classes.add(getattr(module, config_class) if isinstance(config_class, str) else config_class)
    owners: dict[str, str] = {}
    for cls in classes:
        for name in cls.__dict__.get("__annotations__", {}):
            assert name not in owners, f"{name} is declared in {owners[name]} and {cls.__name__}"
            owners[name] = cls.__name__
    assert {"dataset", "data", "vocab", "question_prompts", "templates"} <= set(owners)




def test_every_deferred_import_resolves() -> None:
    """Imports inside functions (kept there so that light commands do not load torch) run only when
    the function does; check that each names something that exists."""
    missing = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.ImportFrom) and node.level == 0 and node.module
                    and node.module.startswith("typoattack")):
                continue
            module = importlib.import_module(node.module)
            for alias in node.names:
                if not hasattr(module, alias.name) and importlib.util.find_spec(f"{node.module}.{alias.name}") is None:
                    missing.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.module}.{alias.name}")
    assert missing == []
