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
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

import typoattack
from typoattack.config.types import Executor, Placement, Precision, Protocol, RealDataset
from typoattack.errors import TypoAttackError

app = typer.Typer(
    help="Typographic attacks on CLIP-style models at a controlled pixel fraction.",
    rich_markup_mode="rich",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)


class RichProgress:
    """Progress bars and messages on stderr."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress

    def start(self, description: str, total: int) -> Callable[[int], None]:
        task = self.progress.add_task(description, total=total)
        return lambda n: self.progress.advance(task, n)

    def log(self, message: str) -> None:
        self.progress.console.print(message)


@contextmanager
def _progress() -> Iterator[RichProgress]:
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
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


# Shared option definitions: one spelling (name, type, help) per option for every command.
ConfigOption = Annotated[Optional[str], typer.Option(
    "--config", "-c", help="Run config: a YAML file or a built-in name (ci, paper, sweep-fraction); flags override its keys.")]
OutOption = Annotated[Optional[Path], typer.Option("--out", "-o", help="Output folder.")]
ModelsOption = Annotated[Optional[list[str]], typer.Option(
    "--model", help="Model: an open_clip name, hf-hub:ORG/REPO or local-dir:PATH (open_clip), or a Hub id or "
                    "save_pretrained folder (transformers); repeat for several.")]
PretrainedsOption = Annotated[Optional[list[str]], typer.Option(
    "--pretrained", help="Pretrained tag (e.g. openai), checkpoint file or seed:N; one for all models or one per --model.")]
BackendsOption = Annotated[Optional[list[str]], typer.Option(
    "--backend", help="Model family: open_clip (default) or transformers; one for all models or one per --model.")]
DataOption = Annotated[Optional[str], typer.Option(help="ImageNet-val folder, image folder with labels.csv, or hf:NAME.")]
LabelsOption = Annotated[Optional[str], typer.Option(help="Labels CSV (file, class_index); default DATA/labels.csv.")]
HfSplitOption = Annotated[Optional[str], typer.Option(help="Split of a Hugging Face dataset.")]
HfImageOption = Annotated[Optional[str], typer.Option(help="Image column of a Hugging Face dataset.")]
HfLabelOption = Annotated[Optional[str], typer.Option(help="Label column of a Hugging Face dataset.")]
LimitOption = Annotated[Optional[int], typer.Option(help="Use a fixed, seeded, class-balanced subset of N images.")]
VocabOption = Annotated[Optional[str], typer.Option(help="Vocabulary YAML, or a built-in name (goh2021, imagenet-classes).")]
FractionsOption = Annotated[Optional[list[float]], typer.Option(help="Pixel fraction in (0, 1); repeat for several.")]
PlacementsOption = Annotated[Optional[list[Placement]], typer.Option(case_sensitive=False, help="Placement; repeat for several.")]
FontsOption = Annotated[Optional[list[str]], typer.Option(help="Font file (.ttf/.otf) or a file name in fonts/; repeat for several.")]
FillsOption = Annotated[Optional[list[str]], typer.Option(help="Text colour: name or #rrggbb; repeat for several.")]
OutlinesOption = Annotated[Optional[list[str]], typer.Option(help="Outline colour: name or #rrggbb; repeat for several.")]
FontOption = Annotated[Optional[str], typer.Option(help="Font file (.ttf/.otf) or a file name in fonts/.")]
FillOption = Annotated[Optional[str], typer.Option(help="Text colour: name or #rrggbb.")]
OutlineOption = Annotated[Optional[str], typer.Option(help="Outline colour: name or #rrggbb.")]
OutlineWidthOption = Annotated[Optional[int], typer.Option(help="Outline width in canvas pixels (0 = none).")]
OpacityOption = Annotated[Optional[float], typer.Option(help="Text opacity in (0, 1].")]
TemplatesOption = Annotated[Optional[str], typer.Option(help="openai (80), simple (7), or a YAML file of templates.")]
BatchSizeOption = Annotated[Optional[str], typer.Option(
    help="Images per encoder batch, or auto (1024 on CUDA with halving on out-of-memory, 256 on CPU).")]
DeviceOption = Annotated[Optional[str], typer.Option(help="auto, cpu, cuda or cuda:N.")]
PrecisionOption = Annotated[Optional[Precision], typer.Option(case_sensitive=False, help="Encoder precision (autocast on CUDA).")]
SeedOption = Annotated[Optional[int], typer.Option(help="Seed of the subset and the random placement.")]
CacheDirOption = Annotated[Optional[str], typer.Option(help="Cache of canvases and classifiers.")]
WorkersOption = Annotated[Optional[int], typer.Option(help="Image decoding processes.")]
ChunkSizeOption = Annotated[Optional[int], typer.Option(help="Items per committed chunk (resume granularity).")]
CompileOption = Annotated[Optional[bool], typer.Option("--compile/--no-compile", help="torch.compile the image encoder.")]
OverwriteOption = Annotated[bool, typer.Option("--overwrite", help="Replace a different run in --out.")]
ExecutorOption = Annotated[Optional[Executor], typer.Option(
    case_sensitive=False, help="Where the cells (model x chunk of items) run: this process, or tasks on a Ray cluster.")]
RayAddressOption = Annotated[Optional[str], typer.Option(
    help="Ray cluster address (default: RAY_ADDRESS of a running cluster, else a local one).")]
RayTimeoutOption = Annotated[Optional[float], typer.Option(help="Seconds to wait for the Ray cluster (default 30).")]
ShardOption = Annotated[Optional[str], typer.Option(
    help="Evaluate only shard K of N of the cells (K/N, e.g. 2/8); combine the folders with `typoattack merge`.")]
DefencesOption = Annotated[Optional[list[str]], typer.Option(
    help="Defence: none, heads:L.H,L.H, heads:@FILE, prefix:PATH or templates:NAME|FILE; repeat for several.")]

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


def _run(task_name: str, config: str | None, overrides: dict[str, Any], overwrite: bool) -> None:
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
    else:
        for renderable in task.show_summary(result.summary, info, console.width):
            console.print(renderable)
    ips = info.images_per_second
    console.print(f"Wrote {result.out_dir}/ ({len(result.records)} records, {info.n_skipped} skipped images"
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
    shard: ShardOption = None, defence: DefencesOption = None,
) -> None:
    """Render attack words on images, classify them zero-shot, and write per-word and confusion tables."""
    _run("eval", config, _get_overrides(locals()), overwrite)


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


def _render(word: str, image: Path, fraction: float, placement: Placement, output: Path, size: int,
            style_options: dict[str, Any], seed: int) -> None:
    from typoattack.tasks.synthetic.config import build_styles
    from typoattack.tasks.synthetic.preview import run_render

    with _user_errors():
        (style,) = build_styles({k: v for k, v in style_options.items() if v is not None})
        cover, mask = run_render(word, image, fraction, placement, style, size, seed, output)
    console.print(f"{output}: {word!r} {placement.value} on {size}x{size}, requested fraction {fraction:g}, "
                  f"measured pixel cover {cover:.4f} (font size {mask.font_size:.2f}px)")


@app.command("render")
def render_command(
    word: Annotated[str, typer.Argument(help="The attack text.")],
    image: Annotated[Path, typer.Argument(help="Source image.", exists=True, dir_okay=False)],
    fraction: Annotated[float, typer.Option(help="Share of canvas pixels the text changes, in (0, 1).")] = 0.07,
    placement: Annotated[Placement, typer.Option(case_sensitive=False, help="paper8, center or random.")] = Placement.PAPER8,
    output: Annotated[Path, typer.Option("--output", "-o", help="Output PNG.")] = Path("attack.png"),
    size: Annotated[int, typer.Option(help="Canvas size (the model input size: 224 for ViT-B-32, 288 for RN50x4).")] = 224,
    font: FontOption = None, fill: FillOption = None, outline: OutlineOption = None,
    outline_width: OutlineWidthOption = None, opacity: OpacityOption = None,
    seed: Annotated[int, typer.Option(help="Seed of the random placement.")] = 0,
) -> None:
    """Preview one attack on one image and print the measured pixel fraction."""
    style = {"font": font, "fill": fill, "outline": outline, "outline_width": outline_width, "opacity": opacity}
    _render(word, image, fraction, placement, output, size, style, seed)


def _report(run_dirs: list[Path], out: Path | None) -> None:
    from typoattack.engine.report import run_report
    from typoattack.tasks.registry import get_tasks

    with _user_errors():
        with _progress() as progress:
            folder, parts = run_report(run_dirs, out, get_tasks(), progress=progress)
    for task, part in parts:
        if not part.table.empty:
            from typoattack.engine.rundir import RunInfo

            for renderable in task.show_summary(part.table, RunInfo(task.name, "", {}), console.width):
                console.print(renderable)
    pages = ", ".join(part.html.name for _, part in parts)
    console.print(f"Rewrote the tables of {len(run_dirs)} run(s) from their records; report in {folder}/ ({pages}, "
                  "figures, tables)", highlight=False)


@app.command("report")
def report_command(
    run_dirs: Annotated[list[Path], typer.Argument(help="One or more run folders (of `eval`, `real` or `stroop`).")],
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Report folder (default: DIR/report for one run, ./typoattack-report for several).")] = None,
) -> None:
    """Recompute each run's tables from its records; write figures, tables and report.html."""
    _report(run_dirs, out)


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
    backend: Annotated[str, typer.Option(help="Model family: open_clip or transformers.")] = "open_clip",
) -> None:
    """List the model names of a backend, or the pretrained tags of one model."""
    _models(name, backend)


def _merge(run_dirs: list[Path], out: Path, overwrite: bool) -> None:
    from typoattack.engine.merge import run_merge
    from typoattack.tasks.registry import get_tasks

    tasks = get_tasks()
    with _user_errors():
        result = run_merge(run_dirs, out, tasks, overwrite=overwrite)
    for renderable in tasks[result.info.task].show_summary(result.summary, result.info, console.width):
        console.print(renderable)
    console.print(f"Merged {len(run_dirs)} shard folders into {result.out_dir}/ ({len(result.records)} records, "
                  f"{len(result.info.cells)} cells)", highlight=False)


@app.command("merge")
def merge_command(
    run_dirs: Annotated[list[Path], typer.Argument(
        help="The shard folders of one run (written by `typoattack <command> --shard K/N`).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Run folder to write.")],
    overwrite: OverwriteOption = False,
) -> None:
    """Combine the shard folders of one run into the run folder a single run writes."""
    _merge(run_dirs, out, overwrite)


# --- typoattack real: the real typographic-attack datasets ---
RealConfigOption = Annotated[Optional[str], typer.Option(
    "--config", "-c", help="YAML file of `real` settings (dataset, data, models, protocol, ...); flags override its keys.")]
RealDatasetOption = Annotated[Optional[RealDataset], typer.Option(
    case_sensitive=False, help="Dataset format: scam, rta100, paint, disentangle or folder.")]
RealDataOption = Annotated[Optional[str], typer.Option(
    help="Dataset folder, or hf:NAME for SCAM (a Hub name, a local dataset folder or a save_to_disk folder).")]
ProtocolOption = Annotated[Optional[Protocol], typer.Option(
    case_sensitive=False, help="union: argmax over all object labels and attack words; binary: object vs its attack word.")]
RealTemplatesOption = Annotated[Optional[str], typer.Option(
    help="dataset (each dataset's own prompt, the default), openai (80), simple (7), or a YAML file of templates.")]
RealSplitOption = Annotated[Optional[str], typer.Option(help="Split of a Hugging Face dataset (SCAM: train).")]
RealLimitOption = Annotated[Optional[int], typer.Option(help="Use a fixed, seeded subset of N photos (a SCAM photo brings all its variants).")]


@app.command("real")
def real_command(
    config: RealConfigOption = None, dataset: RealDatasetOption = None, data: RealDataOption = None,
    out: OutOption = None, model: ModelsOption = None, pretrained: PretrainedsOption = None,
    backend: BackendsOption = None, protocol: ProtocolOption = None, templates: RealTemplatesOption = None,
    hf_split: RealSplitOption = None, limit: RealLimitOption = None, batch_size: BatchSizeOption = None,
    device: DeviceOption = None, precision: PrecisionOption = None, seed: SeedOption = None,
    cache_dir: CacheDirOption = None, workers: WorkersOption = None, chunk_size: ChunkSizeOption = None,
    compile: CompileOption = None, overwrite: OverwriteOption = False, defence: DefencesOption = None,
    executor: ExecutorOption = None, ray_address: RayAddressOption = None, ray_timeout: RayTimeoutOption = None,
    shard: ShardOption = None,
) -> None:
    """Classify real photos with typographic attacks (SCAM, RTA-100, PAINT, Disentangling, a folder) zero-shot."""
    _run("real", config, _get_overrides(locals()), overwrite)


PromptsOption = Annotated[Optional[list[str]], typer.Option(
    "--prompt", help="Zero-shot template with {} for the colour name; repeat for several (averaged).")]
ColoursOption = Annotated[Optional[str], typer.Option(help="Colour set: a YAML file of names and RGB values, or a built-in name (distill).")]
NeutralWordOption = Annotated[Optional[str], typer.Option(help="Word of the neutral condition (names no colour).")]
BackgroundsOption = Annotated[Optional[list[str]], typer.Option(
    "--background", help="Background colour: name or #rrggbb; repeat for several.")]
BackgroundDataOption = Annotated[Optional[str], typer.Option(
    help="Photos as backgrounds too (replacing the default white): image folder with labels.csv, ImageNet-val folder or hf:NAME.")]
BackgroundLimitOption = Annotated[Optional[int], typer.Option(help="Number of background photos (seeded, class-balanced; default 8).")]
VariantsOption = Annotated[Optional[int], typer.Option(help="Renderings per stimulus (variant 0 centred, the others with seeded size and position jitter).")]
StroopConfigOption = Annotated[Optional[str], typer.Option(
    "--config", "-c", help="YAML file of `stroop` settings; flags override its keys.")]


@app.command("stroop")
def stroop_command(
    config: StroopConfigOption = None, out: OutOption = None, model: ModelsOption = None,
    pretrained: PretrainedsOption = None, backend: BackendsOption = None,
    prompt: PromptsOption = None, colours: ColoursOption = None, neutral_word: NeutralWordOption = None,
    font: FontsOption = None, background: BackgroundsOption = None, background_data: BackgroundDataOption = None,
    background_limit: BackgroundLimitOption = None, variants: VariantsOption = None,
    seed: Annotated[Optional[int], typer.Option(help="Seed of the size and position jitter.")] = None,
    batch_size: BatchSizeOption = None, device: DeviceOption = None, precision: PrecisionOption = None,
    cache_dir: CacheDirOption = None, workers: WorkersOption = None, chunk_size: ChunkSizeOption = None,
    compile: CompileOption = None, overwrite: OverwriteOption = False, executor: ExecutorOption = None,
    ray_address: RayAddressOption = None, ray_timeout: RayTimeoutOption = None, shard: ShardOption = None,
) -> None:
    """Goh et al.'s Stroop test: colour words in ink colours, classified zero-shot among the colours."""
    _run("stroop", config, _get_overrides(locals()), overwrite)


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
    out: Annotated[Path, typer.Option("--out", "-o", help="The heads.yaml to write.")],
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
