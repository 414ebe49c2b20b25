"""The tasks by name: the one file that names every kind of benchmark.

A new task is one folder under `typoattack/tasks/` with a `TASK` plus one line here (and its
command in the CLI).
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Iterator, Mapping

from typoattack.engine.task import Task

_TASKS: dict[str, str] = {
    "eval": "typoattack.tasks.synthetic.task",
    "real": "typoattack.tasks.real.task",
    "stroop": "typoattack.tasks.stroop.task",
    "vlm": "typoattack.tasks.vlm.task",
}


def list_task_names() -> list[str]:
    """The task names, in report order."""
    return list(_TASKS)


@functools.cache
def get_task(name: str) -> Task:
    """The task called `name` (its module is imported on first use).

    Raises:
        KeyError: No task has that name.
    """
    return importlib.import_module(_TASKS[name]).TASK


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
