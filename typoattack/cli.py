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
from typoattack.config.types import Executor, Placement, Precision
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
ModelOption = Annotated[Optional[str], typer.Option(help="open_clip model name, hf-hub:ORG/REPO or local-dir:PATH.")]
PretrainedOption = Annotated[Optional[str], typer.Option(help="Pretrained tag (e.g. openai), checkpoint file, or seed:N.")]
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
ChunkSizeOption = Annotated[Optional[int], typer.Option(help="Images per committed chunk (resume granularity).")]
CompileOption = Annotated[Optional[bool], typer.Option("--compile/--no-compile", help="torch.compile the image encoder.")]
OverwriteOption = Annotated[bool, typer.Option("--overwrite", help="Replace a different run in --out.")]
ExecutorOption = Annotated[Optional[Executor], typer.Option(
    case_sensitive=False, help="Where the cells (model x chunk of images) run: this process, or tasks on a Ray cluster.")]
RayAddressOption = Annotated[Optional[str], typer.Option(
    help="Ray cluster address (default: RAY_ADDRESS of a running cluster, else a local one).")]
RayTimeoutOption = Annotated[Optional[float], typer.Option(
    help="Seconds to wait for the Ray cluster at --ray-address before giving up (default 30).")]
ShardOption = Annotated[Optional[str], typer.Option(
    help="Evaluate only shard K of N of the cells (K/N, e.g. 2/8); combine the folders with `typoattack merge`.")]
DefencesOption = Annotated[Optional[list[str]], typer.Option(
    help="Defence: none, heads:L.H,L.H, heads:@FILE, prefix:PATH or templates:NAME|FILE; repeat for several.")]

# Options whose YAML key is spelled differently.
_YAML_KEYS = {"fraction": "fractions", "defence": "defences"}


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


def _eval(config: str | None, overrides: dict[str, Any], overwrite: bool) -> None:
    from typoattack.analysis.report import build_rich_tables
    from typoattack.config.loading import load_run_config
    from typoattack.running import runner

    with _user_errors():
        cfg = load_run_config(config, overrides)
        with _progress() as progress:
            result = runner.run_eval(cfg, progress=progress, overwrite=overwrite)
    shard = result.info.get("shard")
    if shard:
        console.print(f"Shard {shard['index']}/{shard['count']}: {len(shard['cells'])} of {len(result.info['cells'])} "
                      "cells; combine all shard folders with `typoattack merge DIR... --out DIR`", highlight=False)
    for table in build_rich_tables(result.per_word) if not shard else []:
        console.print(table)
    ips = result.info.get("images_per_second")
    console.print(f"Wrote {result.out_dir}/ ({len(result.records)} records, "
                  f"{result.info['n_skipped']} skipped images"
                  + (f", {ips} images/s" if ips else "") + ")")
    for warning in cfg.model_warnings:
        console.print(f"[bold yellow]{warning}[/]")


@app.command("eval")
def eval_command(
    config: ConfigOption = None, out: OutOption = None, model: ModelOption = None, pretrained: PretrainedOption = None,
    data: DataOption = None, labels: LabelsOption = None, hf_split: HfSplitOption = None,
    hf_image_column: HfImageOption = None, hf_label_column: HfLabelOption = None, limit: LimitOption = None,
    vocab: VocabOption = None, fraction: FractionsOption = None, placement: PlacementsOption = None,
    font: FontsOption = None, fill: FillsOption = None, outline: OutlinesOption = None,
    outline_width: OutlineWidthOption = None, opacity: OpacityOption = None, templates: TemplatesOption = None,
    batch_size: BatchSizeOption = None, device: DeviceOption = None, precision: PrecisionOption = None,
    seed: SeedOption = None, cache_dir: CacheDirOption = None, workers: WorkersOption = None,
    chunk_size: ChunkSizeOption = None, compile: CompileOption = None, overwrite: OverwriteOption = False,
    executor: ExecutorOption = None, ray_address: RayAddressOption = None, ray_timeout: RayTimeoutOption = None,
    shard: ShardOption = None,
    defence: DefencesOption = None,
) -> None:
    """Render attack words on images, classify them zero-shot, and write per-word and confusion tables."""
    _eval(config, _get_overrides(locals()), overwrite)


def _prepare(config: str | None, overrides: dict[str, Any]) -> None:
    from typoattack.config.loading import load_run_config
    from typoattack.running import runner

    with _user_errors():
        cfg = load_run_config(config, overrides)
        with _progress() as progress:
            summaries = runner.run_prepare(cfg, progress=progress)
    for s in summaries:
        console.print(f"{s['cache']}: {s['n_images']} canvases {s['canvas_size'][0]}x{s['canvas_size'][1]} "
                      f"({s['gigabytes']} GB, {s['n_skipped']} skipped, {s['seconds']} s)", highlight=False)


@app.command("prepare")
def prepare_command(
    config: ConfigOption = None, data: DataOption = None, labels: LabelsOption = None, hf_split: HfSplitOption = None,
    hf_image_column: HfImageOption = None, hf_label_column: HfLabelOption = None, limit: LimitOption = None,
    model: ModelOption = None, pretrained: PretrainedOption = None, seed: SeedOption = None,
    cache_dir: CacheDirOption = None, workers: WorkersOption = None,
) -> None:
    """Decode and resize every image once into the memory-mapped canvas cache (no weights needed)."""
    _prepare(config, _get_overrides(locals()))


def _render(word: str, image: Path, fraction: float, placement: Placement, output: Path, size: int,
            style_options: dict[str, Any], seed: int) -> None:
    from typoattack.config.loading import build_styles
    from typoattack.running.preview import run_render

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
    from typoattack.analysis.report import build_rich_tables
    from typoattack.running.reporting import run_report

    with _user_errors():
        with _progress() as progress:
            per_word, out_dir = run_report(run_dirs, out, progress=progress)
    for table in build_rich_tables(per_word):
        console.print(table)
    console.print(f"Rewrote the tables of {len(run_dirs)} run(s) from records.parquet; report in {out_dir}/ "
                  "(report.html, report.md, plots, leaderboard)", highlight=False)


@app.command("report")
def report_command(
    run_dirs: Annotated[list[Path], typer.Argument(help="One or more folders written by `typoattack eval` or `typoattack real`.")],
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Report folder (default: DIR/report for one run, ./typoattack-report for several).")] = None,
) -> None:
    """Recompute each run's tables from records.parquet; write plots, a leaderboard and report.html."""
    _report(run_dirs, out)


def _models(name: str | None) -> None:
    from typoattack.models.loading import list_model_names, list_pretrained_tags

    with _user_errors():
        if name is None:
            for m in list_model_names():
                console.print(m, highlight=False)
            return
        tags = list_pretrained_tags(name)
    console.print(f"{name}: " + (", ".join(tags) if tags else "no pretrained tags (use a checkpoint file or seed:N)"),
                  highlight=False)


@app.command("models")
def models_command(
    name: Annotated[Optional[str], typer.Argument(help="Show the pretrained tags of this model.")] = None,
) -> None:
    """List open_clip model names, or the pretrained tags of one model."""
    _models(name)


def _merge(run_dirs: list[Path], out: Path, overwrite: bool) -> None:
    from typoattack.analysis.report import build_rich_tables
    from typoattack.running.merge import run_merge

    with _user_errors():
        result = run_merge(run_dirs, out, overwrite=overwrite)
    if result.info.get("kind") == "real":
        from typoattack.analysis.real_report import build_summary_rich_table

        config = result.info["config"]
        console.print(build_summary_rich_table(result.per_word, f"Real typographic attacks: {config['dataset']}, "
                                               f"protocol {config['protocol']}"))
    else:
        for table in build_rich_tables(result.per_word):
            console.print(table)
    console.print(f"Merged {len(run_dirs)} shard folders into {result.out_dir}/ ({len(result.records)} records, "
                  f"{len(result.info['cells'])} cells)", highlight=False)


@app.command("merge")
def merge_command(
    run_dirs: Annotated[list[Path], typer.Argument(
        help="The folders written by `typoattack eval --shard K/N` (or `typoattack real --shard K/N`).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Run folder to write.")],
    overwrite: OverwriteOption = False,
) -> None:
    """Combine the shard folders of one run into the run folder a single run writes."""
    _merge(run_dirs, out, overwrite)


# --- typoattack real: the real typographic-attack datasets (issue 11) ---
from typoattack.config.real import LabelSet, Protocol, RealDataset  # noqa: E402

RealConfigOption = Annotated[Optional[str], typer.Option(
    "--config", "-c", help="YAML file of `real` settings (dataset, data, models, protocol, ...); flags override its keys.")]
RealDatasetOption = Annotated[Optional[RealDataset], typer.Option(
    case_sensitive=False, help="Dataset format: scam, rta100, paint, disentangle or folder.")]
RealDataOption = Annotated[Optional[str], typer.Option(
    help="Dataset folder, or hf:NAME for SCAM (a Hub name, a local dataset folder or a save_to_disk folder).")]
RealModelsOption = Annotated[Optional[list[str]], typer.Option(
    "--model", help="open_clip model name, hf-hub:ORG/REPO or local-dir:PATH; repeat for several.")]
RealPretrainedOption = Annotated[Optional[list[str]], typer.Option(
    "--pretrained", help="Pretrained tag, checkpoint file or seed:N; one for all models or one per --model.")]
ProtocolOption = Annotated[Optional[Protocol], typer.Option(
    case_sensitive=False, help="union: argmax over all object labels and attack words; binary: object vs its attack word.")]
RealTemplatesOption = Annotated[Optional[str], typer.Option(
    help="dataset (each dataset's own prompt, the default), openai (80), simple (7), or a YAML file of templates.")]
RealSplitOption = Annotated[Optional[str], typer.Option(help="Split of a Hugging Face dataset (SCAM: train).")]
RealLimitOption = Annotated[Optional[int], typer.Option(help="Use a fixed, seeded subset of N photos (a SCAM photo brings all its variants).")]
RealLabelsOption = Annotated[Optional[LabelSet], typer.Option(
    case_sensitive=False, help="Union protocol labels: dataset (its class list, e.g. Disentangling's classes.json, "
    "with the annotations' labels and words; the default) or annotations (the annotations' only).")]


def _real(config: str | None, overrides: dict[str, Any], overwrite: bool) -> None:
    from typoattack.analysis.real_report import build_summary_rich_table
    from typoattack.config.real import load_real_config
    from typoattack.running.real import run_real

    with _user_errors():
        cfg = load_real_config(config, overrides)
        with _progress() as progress:
            result = run_real(cfg, progress=progress, overwrite=overwrite)
    shard = result.info.get("shard")
    if shard:
        console.print(f"Shard {shard['index']}/{shard['count']}: {len(shard['cells'])} of {len(result.info['cells'])} "
                      "cells; combine all shard folders with `typoattack merge DIR... --out DIR`", highlight=False)
    else:
        console.print(build_summary_rich_table(result.summary, f"Real typographic attacks: {cfg.dataset.value}, "
                                               f"protocol {cfg.protocol.value}"))
    console.print(f"Wrote {result.out_dir}/ ({len(result.records)} records, {result.info['n_skipped']} skipped images)",
                  highlight=False)
    for warning in cfg.model_warnings:
        console.print(f"[bold yellow]{warning}[/]")


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


def _stroop(config: str | None, overrides: dict[str, Any], overwrite: bool) -> None:
    from typoattack.analysis.stroop import build_stroop_summary_cells
    from typoattack.config.stroop import load_stroop_config
    from typoattack.running.stroop import run_stroop

    with _user_errors():
        cfg = load_stroop_config(config, overrides)
        with _progress() as progress:
            result = run_stroop(cfg, progress=progress, overwrite=overwrite)
    from rich.table import Table

    header, cells = build_stroop_summary_cells(result.summary)
    table = Table(title="Stroop test: share read as the ink vs as the written word")
    for col in header:
        table.add_column(col, justify="right" if col in ("n",) or "[" in col else "left")
    for row in cells:
        table.add_row(*row)
    console.print(table)
    console.print(f"Wrote {result.out_dir}/ ({len(result.rows)} rows: stroop.csv, stroop_summary.csv, "
                  "stroop_matrix.png, stroop_examples.png, run.json)", highlight=False)
    for warning in cfg.model_warnings:
        console.print(f"[bold yellow]{warning}[/]")


@app.command("real")
def real_command(
    config: RealConfigOption = None, dataset: RealDatasetOption = None, data: RealDataOption = None,
    out: OutOption = None, model: RealModelsOption = None, pretrained: RealPretrainedOption = None,
    protocol: ProtocolOption = None, templates: RealTemplatesOption = None, hf_split: RealSplitOption = None,
    limit: RealLimitOption = None, labels: RealLabelsOption = None, batch_size: BatchSizeOption = None,
    device: DeviceOption = None, precision: PrecisionOption = None, seed: SeedOption = None,
    cache_dir: CacheDirOption = None, workers: WorkersOption = None, chunk_size: ChunkSizeOption = None,
    compile: CompileOption = None, overwrite: OverwriteOption = False, defence: DefencesOption = None,
    executor: ExecutorOption = None, ray_address: RayAddressOption = None, ray_timeout: RayTimeoutOption = None,
    shard: ShardOption = None,
) -> None:
    """Classify real photos with typographic attacks (SCAM, RTA-100, PAINT, Disentangling, a folder) zero-shot."""
    _real(config, _get_overrides(locals()), overwrite)


@app.command("stroop")
def stroop_command(
    config: ConfigOption = None, out: OutOption = None, model: ModelOption = None, pretrained: PretrainedOption = None,
    prompt: PromptsOption = None, colours: ColoursOption = None, neutral_word: NeutralWordOption = None,
    font: FontsOption = None, background: BackgroundsOption = None, background_data: BackgroundDataOption = None,
    background_limit: BackgroundLimitOption = None, variants: VariantsOption = None,
    seed: Annotated[Optional[int], typer.Option(help="Seed of the size and position jitter.")] = None,
    batch_size: BatchSizeOption = None, device: DeviceOption = None, precision: PrecisionOption = None,
    cache_dir: CacheDirOption = None, overwrite: OverwriteOption = False,
) -> None:
    """Goh et al.'s Stroop test: colour words in ink colours, classified zero-shot among the colours."""
    _stroop(config, _get_overrides(locals()), overwrite)


def _find_heads(config: str | None, out: Path, overrides: dict[str, Any]) -> None:
    from typoattack.config.loading import load_run_config
    from typoattack.running.find_heads import run_find_heads

    with _user_errors():
        cfg = load_run_config(config, overrides)
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
    config: ConfigOption = None, model: ModelOption = None, pretrained: PretrainedOption = None,
    data: DataOption = None, labels: LabelsOption = None, hf_split: HfSplitOption = None,
    hf_image_column: HfImageOption = None, hf_label_column: HfLabelOption = None, limit: LimitOption = None,
    vocab: VocabOption = None, fraction: FractionsOption = None, placement: PlacementsOption = None,
    templates: TemplatesOption = None, batch_size: BatchSizeOption = None, device: DeviceOption = None,
    precision: PrecisionOption = None, seed: SeedOption = None, cache_dir: CacheDirOption = None,
    workers: WorkersOption = None,
) -> None:
    """Choose vision attention heads to ablate: score heads by class-token attention on the drawn text,
    keep them greedily on a seeded half of the images, report on the other half; write heads.yaml."""
    options = dict(locals())
    options.pop("out")
    _find_heads(config, out, _get_overrides(options))
