"""The shape of the package: no import cycle (not even through imports under TYPE_CHECKING or inside
functions), the engine names no task and no model family, tasks, engine and defences import no
backends module but base and registry, and every config field is declared in one class (the layers
themselves: import-linter, run by `make test`)."""

from __future__ import annotations

import ast
import copy
import dataclasses
import importlib
import importlib.util
import inspect
import re
import sys
import tomllib
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


def build_source_import_graph(package: Path = PACKAGE) -> grimp.ImportGraph:
    """Every import of one typoattack module by another, read from the source with `ast`: those at
    module level, inside functions and under `if TYPE_CHECKING:` alike (`from typoattack.pkg import
    module` is an import of the submodule when it is one, else of the package)."""
    root = package.name
    paths = {}
    for path in sorted(package.rglob("*.py")):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        paths[".".join(parts)] = path
    graph = grimp.ImportGraph()
    for name in paths:
        graph.add_module(name)
    for name, path in paths.items():
        here = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                imported = {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from the package `level - 1` above this module's package
                    base = ".".join(here[:len(here) - node.level + 1] + ([node.module] if node.module else []))
                imported = {f"{base}.{alias.name}" if f"{base}.{alias.name}" in paths else base
                            for alias in node.names}
            else:
                continue
            for module in imported:
                if module.split(".")[0] == root and module in paths and module != name:
                    graph.add_import(importer=name, imported=module)
    return graph


def test_source_import_graph_reads_every_kind_of_import(tmp_path) -> None:
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("VALUE = 1\n")
    (package / "a.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.b import B\n")
    (package / "b.py").write_text("def f():\n    from pkg.sub import c, VALUE\n")
    (package / "sub" / "c.py").write_text("from .. import a\nimport pkg.sub\n")
    graph = build_source_import_graph(package)
    assert graph.find_modules_directly_imported_by("pkg.a") == {"pkg.b"}
    assert graph.find_modules_directly_imported_by("pkg.b") == {"pkg.sub.c", "pkg.sub"}
    assert graph.find_modules_directly_imported_by("pkg.sub.c") == {"pkg.a", "pkg.sub"}
    assert find_import_cycles(graph) == [["pkg.a", "pkg.b", "pkg.sub.c"]]


def test_no_import_cycle_even_through_type_checking_or_deferred_imports() -> None:
    """Two modules that know each other, even only for type hints or inside a function, are one
    module cut in two: the lower one states what it needs (a Protocol) or the shared type moves down."""
    cycles = find_import_cycles(build_source_import_graph())
    assert cycles == [], "import cycles:\n" + "\n".join(" <-> ".join(cycle) for cycle in cycles)


def _get_backends_contract() -> dict[str, object]:
    """The import-linter contract (pyproject.toml) that keeps model families out of tasks, engine and defences."""
    config = tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())["tool"]["importlinter"]
    return next(c for c in config["contracts"]
                if c["type"] == "forbidden" and "typoattack.tasks" in c["source_modules"])


def test_tasks_engine_and_defences_import_no_backends_module_but_base_and_registry() -> None:
    """The contract forbids every module under typoattack.backends (a wildcard), so that a family
    module cannot escape it by its name; checked on the real graph and on one with an offending import
    of a module that does not exist yet."""
    from importlinter.configuration import configure
    from importlinter.contracts.forbidden import ForbiddenContract

    configure()  # import-linter's settings (its timer), as its command sets them
    options = _get_backends_contract()
    assert set(options["source_modules"]) == {"typoattack.tasks", "typoattack.engine", "typoattack.defences"}
    assert set(options["forbidden_modules"]) == {"typoattack.backends.*", "open_clip", "transformers"}
    assert set(options["ignore_imports"]) == {"typoattack.** -> typoattack.backends.base",
                                              "typoattack.** -> typoattack.backends.registry"}
    session = {"root_packages": ["typoattack"], "include_external_packages": "True"}
    # As import-linter's TOML reader hands them over: booleans as strings.
    contract_options = {k: str(v) if isinstance(v, bool) else v for k, v in options.items()
                        if k not in ("name", "type")}

    def is_kept(graph: grimp.ImportGraph) -> bool:
        return ForbiddenContract(str(options["name"]), session, contract_options).check(copy.deepcopy(graph),
                                                                                         verbose=False).kept

    graph = grimp.build_graph("typoattack", include_external_packages=True)
    assert is_kept(graph)
    graph.add_module("typoattack.backends.foo_vlm")
    for importer, imported in [("typoattack.tasks.vlm.task", "typoattack.backends.foo_vlm"),
                               ("typoattack.engine.run", "typoattack.backends.transformers.chat"),
                               ("typoattack.defences.apply", "typoattack.backends.open_clip.heads")]:
        offending = copy.deepcopy(graph)
        offending.add_import(importer=importer, imported=imported)
        assert not is_kept(offending), f"{importer} -> {imported} passes the contract"


def test_the_engine_names_no_task_and_no_model_family() -> None:
    names = [*list_task_names(), "synthetic", "open_clip", "transformers"]
    for path in sorted((PACKAGE / "engine").glob("*.py")):
        code = re.sub(r'""".*?"""', "", path.read_text(), flags=re.S)  # docstrings may mention them
        for name in names:
            assert not re.search(rf"[\"'.]{name}\b", code), f"{path.name} names {name!r}"


def test_each_config_field_is_declared_once() -> None:
    """A field is declared in one class; a task's config may declare a shared field again only to give
    it its own options (another default or help), never another type."""
    import typing

    import typoattack.config.attack
    import typoattack.config.common
    import typoattack.config.datasets
    from typoattack.config.options import list_options
    from typoattack.tasks.registry import get_task_config, list_task_names

    classes = {cls for module in (typoattack.config.common, typoattack.config.attack, typoattack.config.datasets)
               for _, cls in inspect.getmembers(module, inspect.isclass) if dataclasses.is_dataclass(cls)
               and cls.__module__ == module.__name__}
    task_classes = {get_task_config(name) for name in list_task_names()}
    owners: dict[str, type] = {}
    for cls in sorted(classes | task_classes, key=lambda c: len(c.__mro__)):
        for name in cls.__dict__.get("__annotations__", {}):
            if name.isupper():
                continue  # a ClassVar describing the command
            if name in owners:
                assert cls in task_classes, f"{name} is declared in {owners[name].__name__} and {cls.__name__}"
                base = owners[name]
                assert typing.get_type_hints(cls)[name] == typing.get_type_hints(base)[name], (cls, name)
                field = {f.name: f for f in dataclasses.fields(cls)}[name]
                assert field.metadata.get("fingerprint") == {f.name: f for f in dataclasses.fields(base)}[
                    name].metadata.get("fingerprint"), (cls, name)
                continue
            owners[name] = cls
    assert {"dataset", "data", "vocab", "question_prompts", "templates"} <= set(owners)
    for cls in task_classes:
        keys = [k for o in list_options(cls) for k in o.keys]
        assert len(keys) == len(set(keys)), (cls, keys)


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
