"""`typoattack report`: group run folders by their task and have each task write its report page.

With one kind of run the page is `report.html`/`.md`; with several, the first kind in the task
order gets `report.html` (which links the others) and each other kind its own page.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from typoattack.progress import NullProgress, ProgressReporter
from typoattack.engine.rundir import RUN_FILE, RunFolder, RunInfo, read_run_info
from typoattack.engine.task import ReportPart, Task
from typoattack.errors import OutputError

REPORT_STEM = "report"
DEFAULT_REPORT_DIR = "typoattack-report"


def get_report_dir(run_dirs: list[Path], out: Path | None) -> Path:
    """The report folder: `out`, else `DIR/report` for one run, else ./typoattack-report."""
    if out is not None:
        return Path(out)
    return run_dirs[0] / "report" if len(run_dirs) == 1 else Path(DEFAULT_REPORT_DIR)


def run_report(run_dirs: list[Path], out: Path | None, tasks: Mapping[str, Task],
               progress: ProgressReporter | None = None) -> tuple[Path, list[tuple[Task, ReportPart]]]:
    """Write the report of `run_dirs` into `out`.

    Args:
        run_dirs: Folders of complete runs, of any tasks.
        out: The report folder (see `get_report_dir`).
        tasks: The tasks by name, in report order.
        progress: Where to show messages.

    Returns:
        (the report folder, each task's part, the main page's first).

    Raises:
        OutputError: No folder, a folder that holds no run or a run of an unknown task, or a task's own
            refusal (an incomplete run, two runs of the same model and conditions).
    """
    progress = progress or NullProgress()
    dirs = [Path(d) for d in run_dirs]
    if not dirs:
        raise OutputError("give at least one run directory")
    infos = [read_run_info(d) for d in dirs]
    for d, info in zip(dirs, infos):
        if info.task not in tasks:
            raise OutputError(f"{d} holds a run this typoattack does not know (task {info.task!r}, not one of "
                              f"{', '.join(tasks)}; a run written before typoattack 0.2 must be run again)")
    folder = get_report_dir(dirs, out)
    check_report_dir(folder, dirs)
    locks = [RunFolder(d) for d in dict.fromkeys(d.resolve() for d in dirs)]
    try:
        for lock in locks:  # the report rewrites each run's tables: no run may be writing them
            lock.lock()
        return folder, _write_parts(dirs, infos, folder, tasks, progress)
    finally:
        for lock in locks:
            lock.unlock()


def check_report_dir(folder: Path, run_dirs: list[Path]) -> None:
    """Refuse a report folder that holds a run other than the reported ones (its tables would be
    overwritten by the report's).

    Raises:
        OutputError: `folder` holds run.json and is not one of `run_dirs`.
    """
    if (folder / RUN_FILE).is_file() and folder.resolve() not in {d.resolve() for d in run_dirs}:
        raise OutputError(f"--out {folder} holds another run ({RUN_FILE}); write the report into a new folder or "
                          "that run's report/ folder")


def _write_parts(dirs: list[Path], infos: list[RunInfo], folder: Path, tasks: Mapping[str, Task],
                 progress: ProgressReporter) -> list[tuple[Task, ReportPart]]:
    """Each task's part of the report, the main page's first."""
    groups = [name for name in tasks if any(i.task == name for i in infos)]
    parts: dict[str, ReportPart] = {}
    for name in groups[1:]:
        chosen = [(d, i) for d, i in zip(dirs, infos) if i.task == name]
        parts[name] = tasks[name].write_report([d for d, _ in chosen], [i for _, i in chosen], folder,
                                               tasks[name].report_stem, (), progress)
    notes = [f"Runs of `typoattack {name}` ({tasks[name].title}) are reported in {parts[name].html.name}."
             for name in groups[1:]]
    main = groups[0]
    chosen = [(d, i) for d, i in zip(dirs, infos) if i.task == main]
    parts[main] = tasks[main].write_report([d for d, _ in chosen], [i for _, i in chosen], folder, REPORT_STEM,
                                           notes, progress)
    return [(tasks[name], parts[name]) for name in groups]
