"""The `typoattack` command line: each command declares its options and hands off to one function."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

import typoattack
from typoattack.config.loading import Placement, Precision
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
        yield RichProgress(progress)


@contextmanager
def _user_errors() -> Iterator[None]:
    """Turn known errors into one red line and exit code 1 (unknown errors keep their traceback)."""
    try:
        yield
    except TypoAttackError as e:
        err_console.print(f"[bold red]Error:[/] {e}", highlight=False, soft_wrap=True)
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


def _eval(config: Path | None, overrides: dict[str, Any], overwrite: bool) -> None:
    from typoattack.config.loading import load_run_config
    from typoattack.analysis.report import build_rich_tables
    from typoattack.running.runner import is_untrained, run_eval

    with _user_errors():
        cfg = load_run_config(config, overrides)
        with _progress() as progress:
            result = run_eval(cfg, progress=progress, overwrite=overwrite)
    for table in build_rich_tables(result.per_word):
        console.print(table)
    ips = result.info.get("images_per_second")
    console.print(f"Wrote {result.out_dir}/ ({len(result.records)} records, "
                  f"{result.info['n_skipped']} skipped images"
                  + (f", {ips} images/s" if ips else "") + ")")
    if is_untrained(cfg):
        console.print("[bold yellow]UNTRAINED MODEL (seed:N weights): these numbers only check the pipeline.[/]")


@app.command("eval")
def eval_command(
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="Run config YAML (flags override its keys).",
                                                   exists=True, dir_okay=False, resolve_path=True)] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Output folder.")] = None,
    model: Annotated[Optional[str], typer.Option(help="open_clip model name, hf-hub:ORG/REPO or local-dir:PATH.")] = None,
    pretrained: Annotated[Optional[str], typer.Option(help="Pretrained tag (e.g. openai), checkpoint file, or seed:N.")] = None,
    data: Annotated[Optional[str], typer.Option(help="ImageNet-val folder, image folder with labels.csv, or hf:NAME.")] = None,
    labels: Annotated[Optional[str], typer.Option(help="Labels CSV (file, class_index); default DATA/labels.csv.")] = None,
    hf_split: Annotated[Optional[str], typer.Option(help="Split of a Hugging Face dataset.")] = None,
    hf_image_column: Annotated[Optional[str], typer.Option(help="Image column of a Hugging Face dataset.")] = None,
    hf_label_column: Annotated[Optional[str], typer.Option(help="Label column of a Hugging Face dataset.")] = None,
    limit: Annotated[Optional[int], typer.Option(help="Use a fixed, seeded, class-balanced subset of N images.")] = None,
    vocab: Annotated[Optional[str], typer.Option(help="Vocabulary YAML, or a name in configs/vocab/ (goh2021).")] = None,
    fraction: Annotated[Optional[list[float]], typer.Option(help="Pixel fraction in (0, 1); repeat for several.")] = None,
    placement: Annotated[Optional[list[Placement]], typer.Option(case_sensitive=False, help="Placement; repeat for several.")] = None,
    font: Annotated[Optional[list[str]], typer.Option(help="Font file (.ttf/.otf) or a file name in fonts/; repeat for several.")] = None,
    fill: Annotated[Optional[list[str]], typer.Option(help="Text colour: name or #rrggbb; repeat for several.")] = None,
    outline: Annotated[Optional[list[str]], typer.Option(help="Outline colour: name or #rrggbb; repeat for several.")] = None,
    outline_width: Annotated[Optional[int], typer.Option(help="Outline width in canvas pixels (0 = none).")] = None,
    opacity: Annotated[Optional[float], typer.Option(help="Text opacity in (0, 1].")] = None,
    templates: Annotated[Optional[str], typer.Option(help="openai (80), simple (7), or a YAML file of templates.")] = None,
    batch_size: Annotated[Optional[str], typer.Option(help="Images per encoder batch, or auto (1024 on CUDA with halving on out-of-memory, 256 on CPU).")] = None,
    device: Annotated[Optional[str], typer.Option(help="auto, cpu, cuda or cuda:N.")] = None,
    precision: Annotated[Optional[Precision], typer.Option(case_sensitive=False, help="Encoder precision (autocast on CUDA).")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Seed of the subset and the random placement.")] = None,
    cache_dir: Annotated[Optional[str], typer.Option(help="Cache of canvases and classifiers.")] = None,
    workers: Annotated[Optional[int], typer.Option(help="Image decoding processes.")] = None,
    chunk_size: Annotated[Optional[int], typer.Option(help="Images per committed chunk (resume granularity).")] = None,
    compile: Annotated[Optional[bool], typer.Option("--compile/--no-compile", help="torch.compile the image encoder.")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a different run in --out.")] = False,
) -> None:
    """Render attack words on images, classify them zero-shot, and write per-word and confusion tables."""
    overrides = {
        "out": str(out) if out else None, "model": model, "pretrained": pretrained, "data": data,
        "labels": labels, "hf_split": hf_split, "hf_image_column": hf_image_column,
        "hf_label_column": hf_label_column, "limit": limit, "vocab": vocab,
        "fractions": list(fraction) if fraction else None,
        "placement": [p.value for p in placement] if placement else None,
        "font": list(font) if font else None, "fill": list(fill) if fill else None,
        "outline": list(outline) if outline else None, "outline_width": outline_width, "opacity": opacity,
        "templates": templates, "batch_size": batch_size, "device": device,
        "precision": precision.value if precision else None, "seed": seed, "cache_dir": cache_dir,
        "workers": workers, "chunk_size": chunk_size, "compile": compile,
    }
    _eval(config, overrides, overwrite)


def _prepare(config: Path | None, overrides: dict[str, Any]) -> None:
    from typoattack.config.loading import load_run_config
    from typoattack.running.runner import run_prepare

    with _user_errors():
        cfg = load_run_config(config, overrides)
        with _progress() as progress:
            summaries = run_prepare(cfg, progress=progress)
    for s in summaries:
        console.print(f"{s['cache']}: {s['n_images']} canvases {s['canvas_size'][0]}x{s['canvas_size'][1]} "
                      f"({s['gigabytes']} GB, {s['n_skipped']} skipped, {s['seconds']} s)", highlight=False)


@app.command("prepare")
def prepare_command(
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="Run config YAML (flags override its keys).",
                                                   exists=True, dir_okay=False, resolve_path=True)] = None,
    data: Annotated[Optional[str], typer.Option(help="ImageNet-val folder, image folder with labels.csv, or hf:NAME.")] = None,
    labels: Annotated[Optional[str], typer.Option(help="Labels CSV (file, class_index).")] = None,
    hf_split: Annotated[Optional[str], typer.Option(help="Split of a Hugging Face dataset.")] = None,
    hf_image_column: Annotated[Optional[str], typer.Option(help="Image column of a Hugging Face dataset.")] = None,
    hf_label_column: Annotated[Optional[str], typer.Option(help="Label column of a Hugging Face dataset.")] = None,
    limit: Annotated[Optional[int], typer.Option(help="Use a fixed, seeded, class-balanced subset of N images.")] = None,
    model: Annotated[Optional[str], typer.Option(help="Model whose eval transform makes the canvases.")] = None,
    pretrained: Annotated[Optional[str], typer.Option(help="Pretrained tag (some change the preprocessing).")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Seed of the subset.")] = None,
    cache_dir: Annotated[Optional[str], typer.Option(help="Cache folder.")] = None,
    workers: Annotated[Optional[int], typer.Option(help="Image decoding processes.")] = None,
) -> None:
    """Decode and resize every image once into the memory-mapped canvas cache (no weights needed)."""
    _prepare(config, {"data": data, "labels": labels, "hf_split": hf_split, "hf_image_column": hf_image_column,
                      "hf_label_column": hf_label_column, "limit": limit, "model": model, "pretrained": pretrained,
                      "seed": seed, "cache_dir": cache_dir, "workers": workers})


def _render(word: str, image: Path, fraction: float, placement: Placement, output: Path, size: int,
            style_overrides: dict[str, Any], seed: int) -> None:
    import numpy as np
    from PIL import Image
    from torchvision import transforms as T

    from typoattack.config.loading import RenderStyle, parse_color, resolve_font_path
    from typoattack.data.sources import load_rgb
    from typoattack.errors import ConfigError, DataError
    from typoattack.attack.render import apply_attack, create_attack_mask

    with _user_errors():
        kwargs: dict[str, Any] = {}
        if style_overrides["font"]:
            kwargs["font"] = resolve_font_path(style_overrides["font"])
        for key in ("fill", "outline"):
            if style_overrides[key]:
                kwargs[key] = parse_color(key, style_overrides[key])
        for key in ("outline_width", "opacity"):
            if style_overrides[key] is not None:
                kwargs[key] = style_overrides[key]
        style = RenderStyle(**kwargs)
        if not 0 < fraction < 1:
            raise ConfigError(f"--fraction {fraction} must be in (0, 1)")
        if size < 16:
            raise ConfigError(f"--size {size} is too small; use the model's input size, e.g. 224")
        try:
            img = load_rgb(image)
        except Exception as e:
            raise DataError(f"cannot read image {image}: {e}") from None
        # open_clip's eval transform for 'shortest' resize mode: bicubic resize, centre crop.
        canvas_tf = T.Compose([T.Resize(size, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(size)])
        canvas = np.asarray(canvas_tf(img), dtype=np.uint8)
        mask = create_attack_mask(word, fraction, placement, style, (size, size))
        attacked, cover = apply_attack(canvas, mask, image.name, seed)
        output.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(attacked).save(output)
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
    font: Annotated[Optional[str], typer.Option(help="Font file or a file name in fonts/.")] = None,
    fill: Annotated[Optional[str], typer.Option(help="Text colour.")] = None,
    outline: Annotated[Optional[str], typer.Option(help="Outline colour.")] = None,
    outline_width: Annotated[Optional[int], typer.Option(help="Outline width in pixels.")] = None,
    opacity: Annotated[Optional[float], typer.Option(help="Text opacity in (0, 1].")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the random placement.")] = 0,
) -> None:
    """Preview one attack on one image and print the measured pixel fraction."""
    _render(word, image, fraction, placement, output, size,
            {"font": font, "fill": fill, "outline": outline, "outline_width": outline_width, "opacity": opacity}, seed)


def _report(run_dirs: list[Path], out: Path | None) -> None:
    from typoattack.analysis.report import build_rich_tables
    from typoattack.running.runner import run_report

    with _user_errors():
        with _progress() as progress:
            per_word, out_dir = run_report(run_dirs, out, progress=progress)
    for table in build_rich_tables(per_word):
        console.print(table)
    console.print(f"Rewrote the tables of {len(run_dirs)} run(s) from records.parquet; report in {out_dir}/ "
                  "(report.html, report.md, plots, leaderboard)", highlight=False)


@app.command("report")
def report_command(
    run_dirs: Annotated[list[Path], typer.Argument(help="One or more folders written by `typoattack eval`.")],
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Report folder (default: DIR/report for one run, ./typoattack-report for several).")] = None,
) -> None:
    """Recompute each run's tables from records.parquet; write plots, a leaderboard and report.html."""
    _report(run_dirs, out)


@app.command("models")
def models_command(
    name: Annotated[Optional[str], typer.Argument(help="Show the pretrained tags of this model.")] = None,
) -> None:
    """List open_clip model names, or the pretrained tags of one model."""
    import open_clip

    from typoattack.errors import WeightsError, suggest
    from typoattack.models.loading import register_model_configs

    register_model_configs()
    with _user_errors():
        if name is None:
            for m in open_clip.list_models():
                console.print(m, highlight=False)
            return
        if name not in open_clip.list_models():
            raise WeightsError(f"unknown open_clip model {name!r}.{suggest(name, open_clip.list_models())}")
        tags = open_clip.list_pretrained_tags_by_model(name)
        console.print(f"{name}: " + (", ".join(tags) if tags else "no pretrained tags (use a checkpoint file or seed:N)"),
                      highlight=False)
