"""The tasks by name: the one file that names every kind of benchmark.

A task is a package with two modules: `config` (its `CONFIG`, a `RunSettings` dataclass whose fields
declare the task's options, from which its command is built) and `task` (its `TASK`, the `Task` the
engine runs). A new task is one folder under `typoattack/tasks/` and one line here; a plugin (or a
test) adds one with `register_task`.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping

from typoattack.config.common import RunSettings
from typoattack.engine.task import Task

_TASKS: dict[str, str] = {
    "eval": "typoattack.tasks.synthetic",
    "real": "typoattack.tasks.real",
    "stroop": "typoattack.tasks.stroop",
    "vlm": "typoattack.tasks.vlm",
    "find-heads": "typoattack.tasks.heads",
    "threshold": "typoattack.tasks.threshold",
}
_LOADED: dict[str, Task] = {}


def register_task(name: str, package: str) -> None:
    """Add a task: `package.config.CONFIG` is its config class, `package.task.TASK` the task.

    Raises:
        ValueError: Another package already has the name.
    """
    if _TASKS.get(name, package) != package:
        raise ValueError(f"task {name!r} is already {_TASKS[name]}")
    _TASKS[name] = package


def unregister_task(name: str) -> None:
    """Remove a task added by `register_task` (tests)."""
    _TASKS.pop(name, None)
    _LOADED.pop(name, None)


def list_task_names() -> list[str]:
    """The task names, in report order."""
    return list(_TASKS)


def get_task(name: str) -> Task:
    """The task called `name` (its module is imported on first use).

    Raises:
        KeyError: No task has that name.
    """
    if name not in _LOADED:
        _LOADED[name] = importlib.import_module(f"{_TASKS[name]}.task").TASK
    return _LOADED[name]


def get_task_config(name: str) -> type[RunSettings]:
    """The config class of the task called `name`, without importing the task itself (its models).

    Raises:
        KeyError: No task has that name.
    """
    return importlib.import_module(f"{_TASKS[name]}.config").CONFIG


class _Tasks(Mapping[str, Task]):
    """The tasks by name, in report order, each module imported when its task is first looked up:
    `merge` of an eval run imports no other task (nor what only their models need)."""

    def __getitem__(self, name: str) -> Task:
        return get_task(name)

    def __iter__(self) -> Iterator[str]:
        return iter(_TASKS)

    def __len__(self) -> int:
        return len(_TASKS)


def get_tasks() -> Mapping[str, Task]:
    """Every task by name, in report order (imported on first lookup)."""
    return _Tasks()
