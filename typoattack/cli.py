"""The `typoattack` command line: each command declares its options and hands off to one function."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

import typoattack
from typoattack.config.types import Executor, LabelSet, Placement, Precision, Protocol, RealDataset
from typoattack.errors import TypoAttackError
from typoattack.tasks.vlm.answers import Scoring
from typoattack.tasks.vlm.prompts import AnswerStyle, OptionOrder

app = typer.Typer(
    help="Typographic attacks on CLIP-style models at a controlled pixel fraction.",
    rich_markup_mode="rich",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
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


@app.callback()
def main(
    version: Annotated[Optional[bool], typer.Option("--version", callback=_version_callback, is_eager=True,
                                                    help="Show versions and exit.")] = None,
) -> None:
    """Typographic attacks on CLIP-style models at a controlled pixel fraction."""


# Help panels: the options of every command are grouped the same way.
RUN, MODEL, DATA, ATTACK, DEFENCES, EXECUTION = "Config and output", "Model", "Data", "Attack", "Defences", "Execution"


def _option(*names: str, panel: str, help: str, metavar: str | None = None, default: str | None = None,
            **kwargs: Any) -> Any:
    """A Typer option in a help panel, with a readable metavar and its effective default (the value a
    run takes when neither the flag nor the config sets it)."""
    return typer.Option(*names, rich_help_panel=panel, help=help, metavar=metavar,
                        show_default=default if default is not None else False, **kwargs)


# Shared option definitions: one spelling (name, type, help) per option for every command.
ConfigOption = Annotated[Optional[str], _option(
    "--config", "-c", panel=RUN, metavar="PATH|NAME",
    help="Run config: a YAML file or a built-in name (ci, paper, sweep-fraction); flags override its keys.")]
OutOption = Annotated[Optional[Path], _option("--out", "-o", panel=RUN, metavar="PATH", help="Output folder.")]
OverwriteOption = Annotated[bool, _option("--overwrite", panel=RUN, metavar=" ", help="Replace a different run in --out.")]
ModelsOption = Annotated[Optional[list[str]], _option(
    "--model", panel=MODEL, metavar="NAME",
    help="Model: an open_clip name, hf-hub:ORG/REPO or local-dir:PATH (open_clip), or a Hub id or "
         "save_pretrained folder (transformers); repeat for several.")]
PretrainedsOption = Annotated[Optional[list[str]], _option(
    "--pretrained", panel=MODEL, metavar="TAG|PATH",
    help="Pretrained tag (e.g. openai), checkpoint file or seed:N; one for all models or one per --model.")]
BackendsOption = Annotated[Optional[list[str]], _option(
    "--backend", panel=MODEL, metavar="NAME", default="open_clip",
    help="Model family: open_clip or transformers; one for all models or one per --model.")]
TemplatesOption = Annotated[Optional[str], _option(
    "--templates", panel=MODEL, metavar="NAME|PATH", default="openai",
    help="Zero-shot templates: openai (80), simple (7), photo (1), or a YAML file of templates.")]
DataOption = Annotated[Optional[str], _option(
    "--data", panel=DATA, metavar="PATH|hf:NAME",
    help="ImageNet-val folder, image folder with labels.csv, hf:NAME, or sample (the 500 images the package ships).")]
LabelsOption = Annotated[Optional[str], _option(
    "--labels", panel=DATA, metavar="PATH", default="DATA/labels.csv", help="Labels CSV (file, class_index).")]
HfSplitOption = Annotated[Optional[str], _option(
    "--hf-split", panel=DATA, metavar="NAME", default="validation", help="Split of a Hugging Face dataset.")]
HfImageOption = Annotated[Optional[str], _option(
    "--hf-image-column", panel=DATA, metavar="NAME", default="image", help="Image column of a Hugging Face dataset.")]
HfLabelOption = Annotated[Optional[str], _option(
    "--hf-label-column", panel=DATA, metavar="NAME", default="label", help="Label column of a Hugging Face dataset.")]
LimitOption = Annotated[Optional[int], _option(
    "--limit", panel=DATA, metavar="N", default="all", help="Use a fixed, seeded, class-balanced subset of N images.")]
SeedOption = Annotated[Optional[int], _option(
    "--seed", panel=DATA, metavar="INT", default="0", help="Seed of the subset and the random placement.")]
VocabOption = Annotated[Optional[str], _option(
    "--vocab", panel=ATTACK, metavar="PATH|NAME", default="goh2021",
    help="Vocabulary YAML, or a built-in name (goh2021, imagenet-classes).")]
FractionsOption = Annotated[Optional[list[float]], _option(
    "--fraction", panel=ATTACK, metavar="FLOAT", default="0.07", help="Pixel fraction in (0, 1); repeat for several.")]
PlacementsOption = Annotated[Optional[list[Placement]], _option(
    "--placement", panel=ATTACK, metavar="paper8|center|random", default="paper8", case_sensitive=False,
    help="Placement; repeat for several.")]
FontsOption = Annotated[Optional[list[str]], _option(
    "--font", panel=ATTACK, metavar="PATH", default="DejaVuSans-Bold.ttf",
    help="Font file (.ttf/.otf) or a file name in fonts/; repeat for several.")]
FillsOption = Annotated[Optional[list[str]], _option(
    "--fill", panel=ATTACK, metavar="COLOUR", default="white", help="Text colour: name or #rrggbb; repeat for several.")]
OutlinesOption = Annotated[Optional[list[str]], _option(
    "--outline", panel=ATTACK, metavar="COLOUR", default="black",
    help="Outline colour: name or #rrggbb; repeat for several.")]
FontOption = Annotated[Optional[str], _option(
    "--font", panel=ATTACK, metavar="PATH", default="DejaVuSans-Bold.ttf",
    help="Font file (.ttf/.otf) or a file name in fonts/.")]
FillOption = Annotated[Optional[str], _option(
    "--fill", panel=ATTACK, metavar="COLOUR", default="white", help="Text colour: name or #rrggbb.")]
OutlineOption = Annotated[Optional[str], _option(
    "--outline", panel=ATTACK, metavar="COLOUR", default="black", help="Outline colour: name or #rrggbb.")]
OutlineWidthOption = Annotated[Optional[int], _option(
    "--outline-width", panel=ATTACK, metavar="INT", default="1", help="Outline width in canvas pixels (0 = none).")]
OpacityOption = Annotated[Optional[float], _option(
    "--opacity", panel=ATTACK, metavar="FLOAT", default="1", help="Text opacity in (0, 1].")]
DefencesOption = Annotated[Optional[list[str]], _option(
    "--defence", panel=DEFENCES, metavar="DEFENCE", default="none",
    help="none, heads:L.H,L.H, heads:@FILE, prefix:PATH or templates:NAME|FILE; repeat for several.")]
BatchSizeOption = Annotated[Optional[str], _option(
    "--batch-size", panel=EXECUTION, metavar="INT|auto", default="auto",
    help="Images per encoder batch (auto: 1024 on CUDA, halved on out-of-memory; 256 on CPU).")]
DeviceOption = Annotated[Optional[str], _option(
    "--device", panel=EXECUTION, metavar="auto|cpu|cuda[:N]", default="auto", help="Where the models run.")]
PrecisionOption = Annotated[Optional[Precision], _option(
    "--precision", panel=EXECUTION, metavar="fp32|bf16|fp16", default="fp32", case_sensitive=False,
    help="Encoder precision (autocast on CUDA).")]
CacheDirOption = Annotated[Optional[str], _option(
    "--cache-dir", panel=EXECUTION, metavar="PATH", default="~/.cache/typoattack",
    help="Cache of canvases, masks and classifiers.")]
WorkersOption = Annotated[Optional[int], _option(
    "--workers", panel=EXECUTION, metavar="INT", default="2", help="Image decoding processes.")]
ChunkSizeOption = Annotated[Optional[int], _option(
    "--chunk-size", panel=EXECUTION, metavar="INT", default="1000",
    help="Items per cell: the unit of commit, resume and sharding. Unset, eval and vlm take fewer images per "
         "cell when a cell would hold over 1 M records (many words or conditions); run.json `chunk_size` says which.")]
CompileOption = Annotated[Optional[bool], _option(
    "--compile/--no-compile", panel=EXECUTION, metavar=" ", default="no-compile",
    help="torch.compile the image encoder.")]
ExecutorOption = Annotated[Optional[Executor], _option(
    "--executor", panel=EXECUTION, metavar="local|ray", default="local", case_sensitive=False,
    help="Where the cells (model x chunk of items) run: this process, or tasks on a Ray cluster.")]
RayAddressOption = Annotated[Optional[str], _option(
    "--ray-address", panel=EXECUTION, metavar="ADDRESS", default="RAY_ADDRESS, else a local cluster",
    help="Ray cluster address.")]
RayTimeoutOption = Annotated[Optional[float], _option(
    "--ray-timeout", panel=EXECUTION, metavar="SECONDS", default="30", help="How long to wait for the Ray cluster.")]
ShardOption = Annotated[Optional[str], _option(
    "--shard", panel=EXECUTION, metavar="K/N",
    help="Evaluate only shard K of N of the cells (e.g. 2/8); combine the folders with `typoattack merge`.")]


class TableView(str, Enum):
    """What the terminal shows at the end of a run."""

    SUMMARY = "summary"
    FULL = "full"


TableOption = Annotated[TableView, _option(
    "--table", panel=RUN, metavar="summary|full", default="summary", case_sensitive=False,
    help="What the terminal shows at the end: a few rows per model (the full table is per_word.md), or every word.")]

# Options whose YAML key is spelled differently.
_YAML_KEYS = {"fraction": "fractions", "defence": "defences", "prompt": "prompt"}


def _to_yaml_value(value: Any) -> Any:
    """A CLI value as the config loader takes it (enums by value, paths as text, [] as unset)."""
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, list):
        return [_to_yaml_value(v) for v in value] or None
    return value


def _get_overrides(options: dict[str, Any]) -> dict[str, Any]:
    """Config overrides keyed as in the YAML file, from a command's option values (its locals)."""
    return {_YAML_KEYS.get(k, k): _to_yaml_value(v) for k, v in options.items() if k not in ("config", "overwrite")}


def _run(task_name: str, config: str | None, overrides: dict[str, Any], overwrite: bool,
         table: TableView = TableView.SUMMARY) -> None:
    """Load a task's config, run it with progress bars, and print its summary and the closing line."""
    from typoattack.engine.run import run_task
    from typoattack.tasks.registry import get_task

    task = get_task(task_name)
    with _user_errors():
        cfg = task.load_config(config, overrides)
        with _progress() as progress:
            result = run_task(task, cfg, progress=progress, overwrite=overwrite)
    info = result.info
    if info.shard:
        console.print(f"Shard {info.shard['index']}/{info.shard['count']}: {len(info.shard['cells'])} of "
                      f"{len(info.cells)} cells; combine all shard folders with `typoattack merge DIR... --out DIR`",
                      highlight=False)
    elif not result.summary.empty:
        for renderable in task.show_summary(result.summary, info, full=table is TableView.FULL):
            console.print(renderable)
    ips = info.images_per_second
    console.print(f"Wrote {result.out_dir}/ ({result.n_records} records, {info.n_skipped} skipped images"
                  + (f", {ips} images/s" if ips else "") + ")", highlight=False)
    for warning in cfg.model_warnings:
        console.print(f"[bold yellow]{warning}[/]")


@app.command("eval")
def eval_command(
    config: ConfigOption = None, out: OutOption = None, model: ModelsOption = None,
    pretrained: PretrainedsOption = None, backend: BackendsOption = None,
    data: DataOption = None, labels: LabelsOption = None, hf_split: HfSplitOption = None,
    hf_image_column: HfImageOption = None, hf_label_column: HfLabelOption = None, limit: LimitOption = None,
    vocab: VocabOption = None, fraction: FractionsOption = None, placement: PlacementsOption = None,
    font: FontsOption = None, fill: FillsOption = None, outline: OutlinesOption = None,
    outline_width: OutlineWidthOption = None, opacity: OpacityOption = None, templates: TemplatesOption = None,
    batch_size: BatchSizeOption = None, device: DeviceOption = None, precision: PrecisionOption = None,
    seed: SeedOption = None, cache_dir: CacheDirOption = None, workers: WorkersOption = None,
    chunk_size: ChunkSizeOption = None, compile: CompileOption = None, overwrite: OverwriteOption = False,
    executor: ExecutorOption = None, ray_address: RayAddressOption = None, ray_timeout: RayTimeoutOption = None,
    shard: ShardOption = None, defence: DefencesOption = None, table: TableOption = TableView.SUMMARY,
) -> None:
    """Render attack words on images, classify them zero-shot, and write per-word and confusion tables."""
    options = dict(locals())
    _run("eval", config, _get_overrides({k: v for k, v in options.items() if k != "table"}), overwrite, table)


def _prepare(config: str | None, overrides: dict[str, Any]) -> None:
    from typoattack.tasks.synthetic.config import load_synthetic_config
    from typoattack.tasks.synthetic.prepare import run_prepare

    with _user_errors():
        cfg = load_synthetic_config(config, overrides)
        with _progress() as progress:
            summaries = run_prepare(cfg, progress=progress)
    for s in summaries:
        console.print(f"{s['cache']}: {s['n_images']} canvases {s['canvas_size'][0]}x{s['canvas_size'][1]} "
                      f"({s['gigabytes']} GB, {s['n_skipped']} skipped, {s['seconds']} s)", highlight=False)


@app.command("prepare")
def prepare_command(
    config: ConfigOption = None, data: DataOption = None, labels: LabelsOption = None, hf_split: HfSplitOption = None,
    hf_image_column: HfImageOption = None, hf_label_column: HfLabelOption = None, limit: LimitOption = None,
    model: ModelsOption = None, pretrained: PretrainedsOption = None, backend: BackendsOption = None,
    seed: SeedOption = None, cache_dir: CacheDirOption = None, workers: WorkersOption = None,
) -> None:
    """Decode and resize every image once into the memory-mapped canvas cache (no weights needed)."""
    _prepare(config, _get_overrides(locals()))


def _render(word: str, image: str, fraction: float, placement: Placement, output: Path, size: int,
            style_options: dict[str, Any], seed: int) -> None:
    from typoattack.config.attack import build_styles
    from typoattack.tasks.synthetic.preview import run_render

    with _user_errors():
        (style,) = build_styles({k: v for k, v in style_options.items() if v is not None})
        cover, mask = run_render(word, image, fraction, placement, style, size, seed, output)
    console.print(f"{output}: {word!r} {placement.value} on {size}x{size}, requested fraction {fraction:g}, "
                  f"measured pixel cover {cover:.4f} (font size {mask.font_size:.2f}px)")


@app.command("render")
def render_command(
    word: Annotated[str, typer.Argument(help="The attack text.")],
    image: Annotated[str, typer.Argument(help="Source image: a file, or sample:NAME for a shipped ImageNet image "
                                               "(e.g. sample:tench).", metavar="PATH|sample:NAME")],
    fraction: Annotated[float, _option("--fraction", panel=ATTACK, metavar="FLOAT", default="0.07",
                                       help="Share of canvas pixels the text changes, in (0, 1).")] = 0.07,
    placement: Annotated[Placement, _option("--placement", panel=ATTACK, metavar="paper8|center|random",
                                            default="paper8", case_sensitive=False, help="Where the word goes.")
                         ] = Placement.PAPER8,
    output: Annotated[Path, _option("--output", "-o", panel=RUN, metavar="PATH", default="attack.png",
                                    help="Output PNG.")] = Path("attack.png"),
    size: Annotated[int, _option("--size", panel=MODEL, metavar="INT", default="224",
                                 help="Canvas size (the model input size: 224 for ViT-B-32, 288 for RN50x4).")] = 224,
    font: FontOption = None, fill: FillOption = None, outline: OutlineOption = None,
    outline_width: OutlineWidthOption = None, opacity: OpacityOption = None,
    seed: Annotated[int, _option("--seed", panel=ATTACK, metavar="INT", default="0",
                                 help="Seed of the random placement.")] = 0,
) -> None:
    """Preview one attack on one image and print the measured pixel fraction."""
    style = {"font": font, "fill": fill, "outline": outline, "outline_width": outline_width, "opacity": opacity}
    _render(word, image, fraction, placement, output, size, style, seed)


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


@app.command("report")
def report_command(
    run_dirs: Annotated[list[Path], typer.Argument(help="One or more run folders (of `eval`, `real`, `stroop` or `vlm`).")],
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


@app.command("models")
def models_command(
    name: Annotated[Optional[str], typer.Argument(help="Show the pretrained tags of this model.")] = None,
    backend: Annotated[str, _option("--backend", panel=MODEL, metavar="NAME", default="open_clip",
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


@app.command("merge")
def merge_command(
    run_dirs: Annotated[list[Path], typer.Argument(
        help="The shard folders of one run (written by `typoattack <command> --shard K/N`).")],
    out: Annotated[Path, _option("--out", "-o", panel=RUN, metavar="PATH", help="Run folder to write.")],
    overwrite: OverwriteOption = False,
) -> None:
    """Combine the shard folders of one run into the run folder a single run writes."""
    _merge(run_dirs, out, overwrite)


# --- typoattack real: the real typographic-attack datasets ---
RealConfigOption = Annotated[Optional[str], _option(
    "--config", "-c", panel=RUN, metavar="PATH",
    help="YAML file of `real` settings (dataset, data, models, protocol, ...); flags override its keys.")]
RealDatasetOption = Annotated[Optional[RealDataset], _option(
    "--dataset", panel=DATA, metavar="scam|rta100|paint|disentangle|folder", case_sensitive=False,
    help="Dataset format.")]
RealDataOption = Annotated[Optional[str], _option(
    "--data", panel=DATA, metavar="PATH|hf:NAME",
    help="Dataset folder, or hf:NAME for SCAM (a Hub name, a local dataset folder or a save_to_disk folder).")]
ProtocolOption = Annotated[Optional[Protocol], _option(
    "--protocol", panel=DATA, metavar="union|binary", default="union", case_sensitive=False,
    help="union: argmax over all object labels and attack words; binary: object vs its attack word.")]
RealTemplatesOption = Annotated[Optional[str], _option(
    "--templates", panel=MODEL, metavar="NAME|PATH", default="dataset",
    help="dataset (each dataset's own prompt), openai (80), simple (7), photo (1), or a YAML file of templates.")]
RealSplitOption = Annotated[Optional[str], _option(
    "--hf-split", panel=DATA, metavar="NAME", default="train", help="Split of a Hugging Face dataset.")]
LabelSetOption = Annotated[Optional[LabelSet], _option(
    "--label-set", panel=DATA, metavar="dataset|annotations", default="dataset", case_sensitive=False,
    help="Classes of the union protocol: the dataset's own class list (Disentangling's classes.json) with the "
         "annotations' labels and words, or the annotations' only.")]
RealLimitOption = Annotated[Optional[int], _option(
    "--limit", panel=DATA, metavar="N", default="all",
    help="Use a fixed, seeded subset of N photos (a SCAM photo brings all its variants).")]


@app.command("real")
def real_command(
    config: RealConfigOption = None, dataset: RealDatasetOption = None, data: RealDataOption = None,
    out: OutOption = None, model: ModelsOption = None, pretrained: PretrainedsOption = None,
    backend: BackendsOption = None, protocol: ProtocolOption = None, templates: RealTemplatesOption = None,
    hf_split: RealSplitOption = None, limit: RealLimitOption = None, label_set: LabelSetOption = None,
    batch_size: BatchSizeOption = None, device: DeviceOption = None, precision: PrecisionOption = None,
    seed: SeedOption = None, cache_dir: CacheDirOption = None, workers: WorkersOption = None,
    chunk_size: ChunkSizeOption = None, compile: CompileOption = None, overwrite: OverwriteOption = False,
    defence: DefencesOption = None, executor: ExecutorOption = None, ray_address: RayAddressOption = None,
    ray_timeout: RayTimeoutOption = None, shard: ShardOption = None,
) -> None:
    """Classify real photos with typographic attacks (SCAM, RTA-100, PAINT, Disentangling, a folder) zero-shot."""
    _run("real", config, _get_overrides(locals()), overwrite)


PromptsOption = Annotated[Optional[list[str]], _option(
    "--prompt", panel=MODEL, metavar="TEXT", default="my favorite word, written in the color {}",
    help="Zero-shot template with {} for the colour name; repeat for several (averaged).")]
ColoursOption = Annotated[Optional[str], _option(
    "--colours", panel=ATTACK, metavar="PATH|NAME", default="distill",
    help="Colour set: a YAML file of names and RGB values, or a built-in name.")]
NeutralWordOption = Annotated[Optional[str], _option(
    "--neutral-word", panel=ATTACK, metavar="TEXT", default="example",
    help="Word of the neutral condition (names no colour).")]
BackgroundsOption = Annotated[Optional[list[str]], _option(
    "--background", panel=ATTACK, metavar="COLOUR", default="white",
    help="Background colour: name or #rrggbb; repeat for several.")]
BackgroundDataOption = Annotated[Optional[str], _option(
    "--background-data", panel=DATA, metavar="PATH|hf:NAME",
    help="Photos as backgrounds too (replacing the default white): image folder with labels.csv, ImageNet-val "
         "folder, hf:NAME or sample.")]
BackgroundLimitOption = Annotated[Optional[int], _option(
    "--background-limit", panel=DATA, metavar="N", default="8",
    help="Number of background photos (seeded, class-balanced).")]
VariantsOption = Annotated[Optional[int], _option(
    "--variants", panel=ATTACK, metavar="N", default="1",
    help="Renderings per stimulus (variant 0 centred, the others with seeded size and position jitter).")]
StroopConfigOption = Annotated[Optional[str], _option(
    "--config", "-c", panel=RUN, metavar="PATH", help="YAML file of `stroop` settings; flags override its keys.")]


@app.command("stroop")
def stroop_command(
    config: StroopConfigOption = None, out: OutOption = None, model: ModelsOption = None,
    pretrained: PretrainedsOption = None, backend: BackendsOption = None,
    prompt: PromptsOption = None, colours: ColoursOption = None, neutral_word: NeutralWordOption = None,
    font: FontsOption = None, background: BackgroundsOption = None, background_data: BackgroundDataOption = None,
    background_limit: BackgroundLimitOption = None, variants: VariantsOption = None,
    seed: Annotated[Optional[int], _option("--seed", panel=ATTACK, metavar="INT", default="0",
                                           help="Seed of the size and position jitter.")] = None,
    batch_size: BatchSizeOption = None, device: DeviceOption = None, precision: PrecisionOption = None,
    cache_dir: CacheDirOption = None, workers: WorkersOption = None, chunk_size: ChunkSizeOption = None,
    compile: CompileOption = None, overwrite: OverwriteOption = False, executor: ExecutorOption = None,
    ray_address: RayAddressOption = None, ray_timeout: RayTimeoutOption = None, shard: ShardOption = None,
) -> None:
    """Goh et al.'s Stroop test: colour words in ink colours, classified zero-shot among the colours."""
    _run("stroop", config, _get_overrides(locals()), overwrite)


# --- typoattack vlm: vision-language chat models ---
QUESTIONS = "Questions"
VlmConfigOption = Annotated[Optional[str], _option(
    "--config", "-c", panel=RUN, metavar="PATH", help="YAML file of `vlm` settings; flags override its keys.")]
VlmModelsOption = Annotated[Optional[list[str]], _option(
    "--model", panel=MODEL, metavar="ID|PATH",
    help="Vision-language chat model: a Hub id in the Hugging Face cache (ORG/NAME) or a save_pretrained folder; "
         "repeat for several.")]
ImageSizeOption = Annotated[Optional[int], _option(
    "--image-size", panel=MODEL, metavar="INT", default="the model's input size",
    help="Side of the square canvas the images are drawn on and handed to the processor (a processor that keeps "
         "the aspect ratio: its tile, or 448 for Qwen2-VL).")]
TrustRemoteCodeOption = Annotated[Optional[bool], _option(
    "--trust-remote-code/--no-trust-remote-code", panel=MODEL, metavar=" ", default="no-trust-remote-code",
    help="Let a model run Python code from its repository (never without this flag).")]
VlmDatasetOption = Annotated[Optional[RealDataset], _option(
    "--dataset", panel=DATA, metavar="scam|rta100|paint|disentangle|folder", case_sensitive=False,
    help="Ask about the photos of a real dataset (its text already on them) instead of drawing attacks on --data.")]
VlmDataOption = Annotated[Optional[str], _option(
    "--data", panel=DATA, metavar="PATH|hf:NAME",
    help="ImageNet-val folder, image folder with labels.csv, hf:NAME or sample; with --dataset, the dataset's "
         "folder (or hf:NAME for SCAM).")]
VlmSplitOption = Annotated[Optional[str], _option(
    "--hf-split", panel=DATA, metavar="NAME", default="validation (train with --dataset)",
    help="Split of a Hugging Face dataset.")]
VlmLimitOption = Annotated[Optional[int], _option(
    "--limit", panel=DATA, metavar="N", default="all",
    help="Use a fixed, seeded subset of N images (as eval selects them; photos with --dataset).")]
VlmPromptsOption = Annotated[Optional[list[str]], _option(
    "--prompt", panel=QUESTIONS, metavar="1..7|ID|PATH", default="1",
    help="SCAM's prompt 1-7 (5 and 7 warn about text), an id from a prompts file, or a YAML file of prompts "
         "(id, text with {a} and {b}, safe); repeat for several.")]
OrderOption = Annotated[Optional[OptionOrder], _option(
    "--order", panel=QUESTIONS, metavar="both|object-first|attack-first", default="both", case_sensitive=False,
    help="Option orders asked: the true object as (a), the attack as (a), or both for every image.")]
ScoringOption = Annotated[Optional[Scoring], _option(
    "--scoring", panel=QUESTIONS, metavar="likelihood|generate", default="likelihood", case_sensitive=False,
    help="likelihood: the option whose answer is more probable (every image answered); generate: a greedy answer "
         "read by SCAM's parser (unreadable: unclear).")]
AnswerOption = Annotated[Optional[AnswerStyle], _option(
    "--answer", panel=QUESTIONS, metavar="letter|letter-label|label", default="letter", case_sensitive=False,
    help="Answer texts scored per option (likelihood): its letter (a, A, (a, (A), '(a) label', or the label.")]
MaxNewTokensOption = Annotated[Optional[int], _option(
    "--max-new-tokens", panel=QUESTIONS, metavar="INT", default="16", help="Longest generated answer (generate).")]
VlmBatchSizeOption = Annotated[Optional[str], _option(
    "--batch-size", panel=EXECUTION, metavar="INT|auto", default="auto",
    help="Questions per forward pass (auto: 8; halved on CUDA out-of-memory).")]
VlmPrecisionOption = Annotated[Optional[Precision], _option(
    "--precision", panel=EXECUTION, metavar="fp32|bf16|fp16", default="fp32", case_sensitive=False,
    help="The dtype the model is loaded and run in (fp16 on CUDA only).")]
VlmTableOption = Annotated[TableView, _option(
    "--table", panel=RUN, metavar="summary|full", default="summary", case_sensitive=False,
    help="What the terminal shows at the end: the answer shares per prompt and condition, or every column with "
         "the 95% intervals.")]


@app.command("vlm")
def vlm_command(
    config: VlmConfigOption = None, out: OutOption = None, model: VlmModelsOption = None,
    image_size: ImageSizeOption = None, trust_remote_code: TrustRemoteCodeOption = None,
    dataset: VlmDatasetOption = None, data: VlmDataOption = None, labels: LabelsOption = None,
    hf_split: VlmSplitOption = None, hf_image_column: HfImageOption = None, hf_label_column: HfLabelOption = None,
    limit: VlmLimitOption = None, vocab: VocabOption = None, fraction: FractionsOption = None,
    placement: PlacementsOption = None, font: FontsOption = None, fill: FillsOption = None,
    outline: OutlinesOption = None, outline_width: OutlineWidthOption = None, opacity: OpacityOption = None,
    prompt: VlmPromptsOption = None, order: OrderOption = None, scoring: ScoringOption = None,
    answer: AnswerOption = None, max_new_tokens: MaxNewTokensOption = None,
    batch_size: VlmBatchSizeOption = None, device: DeviceOption = None, precision: VlmPrecisionOption = None,
    seed: SeedOption = None, cache_dir: CacheDirOption = None, workers: WorkersOption = None,
    chunk_size: ChunkSizeOption = None, overwrite: OverwriteOption = False, executor: ExecutorOption = None,
    ray_address: RayAddressOption = None, ray_timeout: RayTimeoutOption = None, shard: ShardOption = None,
    table: VlmTableOption = TableView.SUMMARY,
) -> None:
    """Ask vision-language chat models SCAM's two-option question about synthetic attacks or a real dataset."""
    options = dict(locals())
    _run("vlm", config, _get_overrides({k: v for k, v in options.items() if k != "table"}), overwrite, table)


def _find_heads(config: str | None, out: Path, overrides: dict[str, Any]) -> None:
    from typoattack.tasks.synthetic.config import load_synthetic_config
    from typoattack.tasks.synthetic.find_heads import run_find_heads

    with _user_errors():
        cfg = load_synthetic_config(config, overrides)
        with _progress() as progress:
            search = run_find_heads(cfg, out, progress=progress)
    (sel, held) = search.baseline
    last = search.steps[-1] if search.steps else None
    heads = ",".join(f"{a}.{b}" for a, b in search.heads) or "none"
    console.print(f"Heads: {heads} ({search.stopped})", highlight=False)
    for name, base, after in (("selection", sel, last[1] if last else sel), ("held-out", held, last[2] if last else held)):
        console.print(f"  {name}: clean top-1 {base.clean_top1:.1%} -> {after.clean_top1:.1%}, typographic top-1 "
                      f"{base.attacked_top1:.1%} -> {after.attacked_top1:.1%}", highlight=False)
    console.print(f"Wrote {out}; evaluate with --defence heads:@{out}", highlight=False)


@app.command("find-heads")
def find_heads_command(
    out: Annotated[Path, _option("--out", "-o", panel=RUN, metavar="PATH", help="The heads.yaml to write.")],
    config: ConfigOption = None, model: ModelsOption = None, pretrained: PretrainedsOption = None,
    backend: BackendsOption = None, data: DataOption = None, labels: LabelsOption = None,
    hf_split: HfSplitOption = None, hf_image_column: HfImageOption = None, hf_label_column: HfLabelOption = None,
    limit: LimitOption = None, vocab: VocabOption = None, fraction: FractionsOption = None,
    placement: PlacementsOption = None, templates: TemplatesOption = None, batch_size: BatchSizeOption = None,
    device: DeviceOption = None, precision: PrecisionOption = None, seed: SeedOption = None,
    cache_dir: CacheDirOption = None, workers: WorkersOption = None,
) -> None:
    """Choose vision attention heads to ablate: score heads by class-token attention on the drawn text,
    keep them greedily on a seeded half of the images, report on the other half; write heads.yaml."""
    options = dict(locals())
    options.pop("out")
    _find_heads(config, out, _get_overrides(options))
