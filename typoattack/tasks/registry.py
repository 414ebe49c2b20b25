"""The tasks by name: the one file that names every kind of benchmark.

A new task is one folder under `typoattack/tasks/` with a `TASK` plus one line here (and its
command in the CLI).
"""

from __future__ import annotations

import functools
import importlib

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


def get_tasks() -> dict[str, Task]:
    """Every task by name, in report order."""
    return {name: get_task(name) for name in _TASKS}
