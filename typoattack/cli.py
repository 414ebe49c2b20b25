"""The `typoattack` command line: one command per task, built from the options its config class declares
(`config.options`), and the tools (prepare, render, report, models, merge); each command hands
off to one function. Known errors become one red line and exit code 1."""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

import typoattack
from typoattack.config.attack import STYLE_OPTIONS
from typoattack.config.common import RunSettings
from typoattack.config.options import NO_DEFAULT, Option, Panel, list_options, to_yaml_value
from typoattack.config.parsing import list_builtin_configs
from typoattack.config.types import Placement
from typoattack.errors import ConfigError, TypoAttackError

_tools = typer.Typer()
"""The commands that are not tasks (`render`, `report`, `models`, `merge`); `create_app` adds them after
the task commands."""
_display_type = typer.core.TyperOption.display_type_rich


def _display_flag_type(self: typer.core.TyperOption, ctx: Any) -> str | None:
    """Flags take no value: the help shows no type for them (Typer would print <bool>)."""
    return None if self.is_flag and self.metavar is None else _display_type(self, ctx)


typer.core.TyperOption.display_type_rich = _display_flag_type
console = Console()
err_console = Console(stderr=True)


class RichProgress:
    """Progress bars and messages on stderr."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress

    def start(self, description: str, total: int, unit: str = "") -> Callable[[int], None]:
        task = self.progress.add_task(description, total=total, unit=unit)
        return lambda n: self.progress.advance(task, n)

    def log(self, message: str) -> None:
        self.progress.console.print(message)


@contextmanager
def _progress() -> Iterator[RichProgress]:
    # Fits 80 columns: a description of up to ~30 characters, a short bar, the count with its unit.
    columns = (TextColumn("{task.description}"), BarColumn(bar_width=16),
               TextColumn("{task.completed:,.0f}/{task.total:,.0f} {task.fields[unit]}"),
               TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=err_console, transient=False) as progress:
        try:
            yield RichProgress(progress)
        except TypoAttackError:
            # A user mistake is one red line: the bars of the work it interrupted go away.
            for task in list(progress.task_ids):
                progress.remove_task(task)
            raise


@contextmanager
def _user_errors() -> Iterator[None]:
    """Turn known errors into one red line and exit code 1 (unknown errors keep their traceback)."""
    try:
        yield
    except TypoAttackError as e:
        # escape: a message such as "pip install 'typoattack[ray]'" is text, not rich markup
        err_console.print(f"[bold red]Error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
        raise typer.Exit(code=1) from None
    except KeyboardInterrupt:
        err_console.print("[bold yellow]Interrupted.[/] Finished chunks are saved; rerun the same command to resume.")
        raise typer.Exit(code=130) from None


def _version_callback(value: bool) -> None:
    if value:
        import open_clip
        import torch

        console.print(f"typoattack {typoattack.__version__} (torch {torch.__version__}, open_clip {open_clip.__version__})")
        raise typer.Exit()


def main(
    version: Annotated[Optional[bool], typer.Option("--version", callback=_version_callback, is_eager=True,
                                                    help="Show versions and exit.")] = None,
) -> None:
    """Typographic attacks on CLIP-style models at a controlled pixel fraction."""


def _option(*names: str, panel: str, help: str, metavar: str | None = None, default: str | None = None,
            **kwargs: Any) -> Any:
    """A Typer option in a help panel, with a readable metavar and its effective default (the value a
    run takes when neither the flag nor the config sets it)."""
    return typer.Option(*names, rich_help_panel=panel, help=help, metavar=metavar,
                        show_default=default if default is not None else False, **kwargs)


_OFF = "_off"
"""Suffix of the hidden parameter of a flag's `--no-` form."""


def _typer_parameters(opt: Option) -> list[inspect.Parameter]:
    """The keyword parameters of a generated command for a declared option (`config.options.Option`);
    None when not given, so the config's value or default applies. A flag (`--compile`) has a hidden
    `--no-compile` beside it, which turns off what a config file turned on; its help shows one name, so
    it fits 80 columns."""
    kind: Any = opt.type or str
    names = (opt.flag, *((opt.short,) if opt.short else ()))
    value_type: Any = list[kind] if opt.repeat else kind
    info = _option(*names, panel=opt.panel.value, help=opt.help, metavar=opt.metavar or None,
                   default=None if opt.default == NO_DEFAULT or kind is bool else opt.default,
                   **({"case_sensitive": False} if isinstance(kind, type) and issubclass(kind, Enum) else {}))
    params = [inspect.Parameter(opt.key, inspect.Parameter.KEYWORD_ONLY, default=None,
                                annotation=Annotated[Optional[value_type], info])]
    if kind is bool:
        off = typer.Option(f"--no-{opt.flag[2:]}", hidden=True, help=f"Turn off {opt.flag}.")
        params.append(inspect.Parameter(opt.key + _OFF, inspect.Parameter.KEYWORD_ONLY, default=None,
                                        annotation=Annotated[Optional[bool], off]))
    return params


def _config_parameter(cls: type[RunSettings]) -> inspect.Parameter:
    names = list_builtin_configs(cls.BUILTIN_DIR)
    help = (f"Run config: a YAML file or a built-in name ({', '.join(names)}); flags override its keys." if names
            else f"YAML file of `{cls.COMMAND}` settings; flags override its keys.")
    info = _option("--config", "-c", panel=RUN, metavar="PATH|NAME" if names else "PATH", help=help)
    return inspect.Parameter("config", inspect.Parameter.KEYWORD_ONLY, default=None,
                             annotation=Annotated[Optional[str], info])


class TableView(str, Enum):
    """What the terminal shows at the end of a run."""

    SUMMARY = "summary"
    FULL = "full"


RUN = Panel.RUN.value
OverwriteOption = Annotated[bool, _option("--overwrite", panel=RUN, metavar=" ", help="Replace a different run in --out.")]
TableOption = Annotated[TableView, _option(
    "--table", panel=RUN, metavar="summary|full", default="summary", case_sensitive=False,
    help="What the terminal shows at the end: a few rows per model, or every row.")]
_PANELS = list(Panel)


def build_command(cls: type[RunSettings], run: Callable[[dict[str, Any]], None], *,
                  keys: Sequence[str] | None = None, extra: Sequence[inspect.Parameter] = (),
                  help: str | None = None) -> Callable[..., None]:
    """A Typer command whose options are those declared on a config class (`cls`), grouped in the
    help panels in their order, beside `--config` (and `--overwrite` and `--table` for a run).

    Args:
        cls: The config class.
        run: Called with the values given (option key -> value; None where not given).
        keys: Only these options (e.g. `prepare` takes the data and model options of `eval`); None: all,
            with `--overwrite` and, where the config has `TABLE_HELP`, `--table`.
        extra: Parameters before the options (arguments, a required `--out`).
        help: The command's help; None: `cls.SUMMARY`.
    """
    opts = [o for o in list_options(cls) if keys is None or o.key in keys]
    params = [*extra, _config_parameter(cls)]
    params += [p for o in sorted(opts, key=lambda o: _PANELS.index(o.panel)) for p in _typer_parameters(o)]
    if keys is None:
        params.append(inspect.Parameter("overwrite", inspect.Parameter.KEYWORD_ONLY, default=False,
                                        annotation=OverwriteOption))
        if cls.TABLE_HELP:
            table = Annotated[TableView, _option(
                "--table", panel=RUN, metavar="summary|full", default="summary", case_sensitive=False,
                help=cls.TABLE_HELP)]
            params.append(inspect.Parameter("table", inspect.Parameter.KEYWORD_ONLY, default=TableView.SUMMARY,
                                            annotation=table))

    def command(**values: Any) -> None:
        run(values)

    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params}
    command.__doc__ = help or cls.SUMMARY
    return command


def _get_overrides(values: Mapping[str, Any]) -> dict[str, Any]:
    """Config overrides keyed as in the YAML file (option keys are YAML keys), from a command's values."""
    overrides = {k: to_yaml_value(v) for k, v in values.items()
                 if k not in ("config", "overwrite", "table") and not k.endswith(_OFF)}
    for key, off in values.items():
        if key.endswith(_OFF) and off:
            flag = key[:-len(_OFF)]
            if overrides.get(flag):
                raise ConfigError(f"--{flag.replace('_', '-')} and --no-{flag.replace('_', '-')} contradict each other")
            overrides[flag] = False
    return overrides


def _run(task_name: str, values: dict[str, Any]) -> None:
    """Load a task's config, run it with progress bars, and print its summary and the closing line."""
    from typoattack.engine.run import run_task
    from typoattack.tasks.registry import get_task

    table = values.get("table", TableView.SUMMARY)
    with _user_errors():
        task = get_task(task_name)
        cfg = task.load_config(values.get("config"), _get_overrides(values))
        with _progress() as progress:
            result = run_task(task, cfg, progress=progress, overwrite=bool(values.get("overwrite")))
    info = result.info
    if info.shard:
        console.print(f"Shard {info.shard['index']}/{info.shard['count']}: {len(info.shard['cells'])} of "
                      f"{len(info.cells)} cells; combine all shard folders with `typoattack merge DIR... --out DIR`",
                      highlight=False)
    elif not result.summary.empty:
        for renderable in task.show_summary(result.summary, info, full=table is TableView.FULL):
            console.print(renderable)
    console.print(f"Wrote {result.out_dir}/ ({result.n_records:,} records, {info.n_skipped} skipped images"
                  + format_speed(info) + ")", highlight=False)
    for warning in cfg.model_warnings:
        console.print(f"[bold yellow]{warning}[/]")


def format_speed(info: Any) -> str:
    """`, 512.6 images/s evaluating, setup 4.2 s`: the evaluation's rate (model loading and the
    zero-shot classifier apart), or nothing when no image was encoded in this session."""
    ips, setup = info.images_per_second, info.seconds_setup_this_session
    if not ips:
        return ""
    return f", {ips:,} images/s evaluating" + (f", setup {setup:.1f} s" if setup else "")


def add_task_commands(target: typer.Typer) -> None:
    """One command per registered task, built from its config class's options."""
    from typoattack.tasks.registry import get_task_config, list_task_names

    for name in list_task_names():
        target.command(name)(build_command(get_task_config(name), functools.partial(_run, name)))


def _prepare(values: dict[str, Any]) -> None:
    from typoattack.tasks.synthetic.config import load_synthetic_config
    from typoattack.tasks.synthetic.prepare import run_prepare

    with _user_errors():
        cfg = load_synthetic_config(values["config"], _get_overrides(values))
        with _progress() as progress:
            summaries = run_prepare(cfg, progress=progress)
    for s in summaries:
        console.print(f"{s['cache']}: {s['n_images']} canvases {s['canvas_size'][0]}x{s['canvas_size'][1]} "
                      f"({s['gigabytes']} GB, {s['n_skipped']} skipped, {s['seconds']} s)", highlight=False)


PREPARE_KEYS = ("model", "pretrained", "backend", "data", "labels", "hf_split", "hf_image_column", "hf_label_column",
                "limit", "seed", "cache_dir", "workers")
"""The `eval` options `prepare` takes: which images, decoded at which models' input sizes, into which cache."""


def _render(word: str, image: str, fraction: float, placement: Placement, output: Path, size: int,
            style_options: dict[str, Any], seed: int) -> None:
    from typoattack.config.attack import build_styles
    from typoattack.tasks.synthetic.preview import run_render

    with _user_errors():
        (style,) = build_styles({k: v for k, v in style_options.items() if v is not None})
        cover, mask = run_render(word, image, fraction, placement, style, size, seed, output)
    console.print(f"{output}: {word!r} {placement.value} on {size}x{size}, requested fraction {fraction:g}, "
                  f"measured pixel cover {cover:.4f} (font size {mask.font_size:.2f}px"
                  f"{'' if mask.style.font == style.font else f', font {Path(mask.style.font).name}'})")


def _style_parameters() -> list[inspect.Parameter]:
    """`render`'s text style options: those of `eval`, one value each."""
    return [p for o in STYLE_OPTIONS
            for p in _typer_parameters(dataclasses.replace(o, repeat=False, help=o.help.replace("; repeat for several", "")))]


def render_command(
    word: Annotated[str, typer.Argument(help="The attack text.")],
    image: Annotated[str, typer.Argument(help="Source image: a file, or sample:NAME for a shipped ImageNet image "
                                               "(e.g. sample:tench).", metavar="PATH|sample:NAME")],
    fraction: Annotated[float, _option("--fraction", panel=Panel.ATTACK.value, metavar="FLOAT", default="0.07",
                                       help="Share of canvas pixels the text changes, in (0, 1).")] = 0.07,
    placement: Annotated[Placement, _option("--placement", panel=Panel.ATTACK.value, metavar="paper8|center|random",
                                            default="paper8", case_sensitive=False, help="Where the word goes.")
                         ] = Placement.PAPER8,
    output: Annotated[Path, _option("--output", "-o", panel=RUN, metavar="PATH", default="attack.png",
                                    help="Output PNG.")] = Path("attack.png"),
    size: Annotated[int, _option("--size", panel=Panel.MODEL.value, metavar="INT", default="224",
                                 help="Canvas size (the model input size: 224 for ViT-B-32, 288 for RN50x4).")] = 224,
    seed: Annotated[int, _option("--seed", panel=Panel.ATTACK.value, metavar="INT", default="0",
                                 help="Seed of the random placement.")] = 0,
    **style: Any,
) -> None:
    """Preview one attack on one image and print the measured pixel fraction."""
    _render(word, image, fraction, placement, output, size, style, seed)


_render_params = list(inspect.signature(render_command, eval_str=True).parameters.values())[:-1] + _style_parameters()
render_command.__signature__ = inspect.Signature(_render_params)  # type: ignore[attr-defined]
render_command.__annotations__ = {p.name: p.annotation for p in _render_params}
_tools.command("render")(render_command)


def _report(run_dirs: list[Path], out: Path | None, table: TableView = TableView.SUMMARY) -> None:
    from typoattack.engine.report import run_report
    from typoattack.tasks.registry import get_tasks

    with _user_errors():
        with _progress() as progress:
            folder, parts = run_report(run_dirs, out, get_tasks(), progress=progress)
    for task, part in parts:
        if not part.table.empty:
            for renderable in task.show_summary(part.table, None, full=table is TableView.FULL):
                console.print(renderable)
    pages = ", ".join(part.html.name for _, part in parts)
    console.print(f"Rewrote the tables of {len(run_dirs)} run(s) from their records; report in {folder}/ ({pages}, "
                  "figures, tables)", highlight=False)


@_tools.command("report")
def report_command(
    run_dirs: Annotated[list[Path], typer.Argument(help="One or more run folders (of any task: `eval`, `real`, `stroop`, `vlm`, `find-heads`).")],
    out: Annotated[Optional[Path], _option("--out", "-o", panel=RUN, metavar="PATH",
                                           default="DIR/report for one run, ./typoattack-report for several",
                                           help="Report folder.")] = None,
    table: TableOption = TableView.SUMMARY,
) -> None:
    """Recompute each run's tables from its records; write figures, tables and report.html."""
    _report(run_dirs, out, table)


def _models(name: str | None, backend: str) -> None:
    from typoattack.backends.registry import get_backend

    with _user_errors():
        family = get_backend(backend)
        if name is None:
            for m in family.list_models():
                console.print(m, highlight=False)
            return
        tags = family.list_pretrained(name)
    console.print(f"{name}: " + (", ".join(tags) if tags else "no pretrained tags (use a checkpoint file or seed:N)"),
                  highlight=False)


@_tools.command("models")
def models_command(
    name: Annotated[Optional[str], typer.Argument(help="Show the pretrained tags of this model.")] = None,
    backend: Annotated[str, _option("--backend", panel=Panel.MODEL.value, metavar="NAME", default="open_clip",
                                    help="Model family: open_clip or transformers.")] = "open_clip",
) -> None:
    """List the model names of a backend, or the pretrained tags of one model."""
    _models(name, backend)


def _merge(run_dirs: list[Path], out: Path, overwrite: bool) -> None:
    from typoattack.engine.merge import run_merge
    from typoattack.tasks.registry import get_tasks

    tasks = get_tasks()
    with _user_errors():
        result = run_merge(run_dirs, out, tasks, overwrite=overwrite)
    for renderable in (tasks[result.info.task].show_summary(result.summary, result.info)
                       if not result.summary.empty else []):
        console.print(renderable)
    console.print(f"Merged {len(run_dirs)} shard folders into {result.out_dir}/ ({result.n_records} records, "
                  f"{len(result.info.cells)} cells)", highlight=False)


@_tools.command("merge")
def merge_command(
    run_dirs: Annotated[list[Path], typer.Argument(
        help="The shard folders of one run (written by `typoattack <command> --shard K/N`).")],
    out: Annotated[Path, _option("--out", "-o", panel=RUN, metavar="PATH", help="Run folder to write.")],
    overwrite: OverwriteOption = False,
) -> None:
    """Combine the shard folders of one run into the run folder a single run writes."""
    _merge(run_dirs, out, overwrite)


def _add_eval_tools(target: typer.Typer) -> None:
    """`prepare`: works on the images and models of an `eval` config, outside the engine (no weights)."""
    from typoattack.tasks.synthetic.config import SyntheticConfig

    target.command("prepare")(build_command(
        SyntheticConfig, _prepare, keys=PREPARE_KEYS,
        help="Decode and resize every image once into the memory-mapped canvas cache (no weights needed)."))


def create_app() -> typer.Typer:
    """The `typoattack` application: one command per registered task, then the tools."""
    target = typer.Typer(
        help="Typographic attacks on CLIP-style models at a controlled pixel fraction.",
        rich_markup_mode="rich", no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)
    target.callback()(main)
    add_task_commands(target)
    _add_eval_tools(target)
    target.registered_commands.extend(_tools.registered_commands)
    return target


app = create_app()
