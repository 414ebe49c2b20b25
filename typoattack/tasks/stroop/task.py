"""`typoattack stroop` as a task: Goh et al.'s Stroop test. Colour words drawn in ink colours at
each model's input size, classified zero-shot among the colour names.

Plan: colours, backgrounds, stimuli and glyphs, device and weights; cut the stimuli into cells of
`chunk_size`. A cell: its stimuli drawn at the model's input size and encoded in batches against
the colour classifier (the prompts averaged; cached on disk). Its records are stroop.csv's rows.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from typoattack.config.parsing import DEFAULT_BACKEND
from typoattack.analysis.query import RecordSet, open_records, quote_name
from typoattack.analysis.report import add_optional_figure
from typoattack.attack.stroop import (
    IMAGE_BACKGROUND_PREFIX, ColourSet, StroopStimulus, check_stimulus_glyphs, get_base_size, get_font_label,
    get_layout, list_stimuli, render_stimulus, resolve_font_label,
)
from typoattack.backends.base import ZeroShotModel, get_classifier
from typoattack.config.common import resolve_chunk_size
from typoattack.config.types import DataSpec, ModelSpec, format_color
from typoattack.data.sources import ImageSource, open_image_source, select_subset
from typoattack.defences.apply import BatchEncoder, resolve_batch_size
from typoattack.engine.cells import Cell, CellResult, cut_cells
from typoattack.engine.rundir import (
    RECORD_DEFAULTS, RECORDS_FILE, RunInfo, check_whole_run, open_run_records,
)
from typoattack.engine.task import Plan, ReportPart, TaskBase
from typoattack.errors import DataError, OutputError
from typoattack.files import write_csv
from typoattack.progress import NullProgress, ProgressReporter
from typoattack.tasks.shared import build_fingerprint, check_models, describe_run_device, get_backend_versions, load_model
from typoattack.tasks.stroop.config import StroopConfig, load_colours, load_stroop_config
from typoattack.tasks.stroop.tables import (
    STROOP_COLUMNS, STROOP_CSV, STROOP_EXAMPLES_PNG, STROOP_MATRIX_PNG, STROOP_SUMMARY_CSV, plot_stroop_examples,
    plot_stroop_matrix_records, query_stroop_example_rows, query_stroop_summary, read_stroop_csv, write_stroop_csv,
    write_stroop_report,
)

STROOP_FILES = (STROOP_CSV, STROOP_SUMMARY_CSV, STROOP_MATRIX_PNG, STROOP_EXAMPLES_PNG)


def _list_words(stimuli: Sequence[StroopStimulus]) -> list[str]:
    return list(dict.fromkeys(s.word for s in stimuli))


def open_background_images(background_data: str | None, limit: int, seed: int) -> tuple[ImageSource | None, list[int]]:
    """The photo backgrounds: the source and the indices of a seeded, class-balanced subset of
    `limit` of its images (None and [] without `background_data`).

    Raises:
        DataError: The source cannot be opened or holds no image.
    """
    if not background_data:
        return None, []
    source = open_image_source(DataSpec(background_data))
    if not source.items:
        raise DataError(f"background data {background_data} holds no image")
    return source, select_subset(source.items, limit, seed)


def load_background_canvases(source: ImageSource | None, indices: Sequence[int],
                             transform: Any) -> dict[str, np.ndarray]:
    """Each photo background resized and cropped by the model's canvas transform: uint8 [H, W, 3]
    by background name ('image:<image id>').

    Raises:
        DataError: An image cannot be decoded (its id and the reason are named).
    """
    canvases = {}
    for i in indices:
        assert source is not None
        image_id = source.items[i].image_id
        try:
            canvases[IMAGE_BACKGROUND_PREFIX + image_id] = np.asarray(transform(source.open_image(i)), dtype=np.uint8)
        except (OSError, ValueError, SyntaxError) as e:
            raise DataError(f"background image {image_id} cannot be decoded: {e}") from None
    return canvases


@dataclass(frozen=True)
class StroopInputs:
    """What every cell of a Stroop run needs (picklable): the colours, the stimuli and the photo
    backgrounds' source and indices."""

    colours: ColourSet
    stimuli: tuple[StroopStimulus, ...]
    background_indices: tuple[int, ...]


def list_run_stimuli(cfg: StroopConfig) -> tuple[ColourSet, ImageSource | None, list[int], list[StroopStimulus]]:
    """The colour set, the photo backgrounds (source and indices) and every stimulus of a run.

    Raises:
        ConfigError: A bad colour set. DataError: Unreadable background photos.
        RenderError: A font cannot draw a word.
    """
    colours = load_colours(cfg.colours)
    source, indices = open_background_images(cfg.background_data, cfg.background_limit, cfg.seed)
    backgrounds = cfg.background_colours
    backgrounds += [IMAGE_BACKGROUND_PREFIX + source.items[i].image_id for i in indices] if source else []
    stimuli = list_stimuli(colours, cfg.neutral_word, cfg.fonts, backgrounds, cfg.variants)
    check_stimulus_glyphs(_list_words(stimuli), cfg.fonts)
    return colours, source, indices, stimuli


@dataclass
class StroopContext:
    """A loaded model with its colour classifier, photo backgrounds at its input size and the
    base font size of each font."""

    model: ZeroShotModel
    inputs: StroopInputs
    encoder: BatchEncoder
    backgrounds: dict[str, np.ndarray]
    base_sizes: dict[str, int]
    info: dict[str, Any] = field(default_factory=dict)


class StroopTask(TaskBase, name="stroop", title="the Stroop test", report_stem="stroop_report",
                 output_files=STROOP_FILES, job_unit="stimuli", config_loader=load_stroop_config):
    """Goh et al.'s Stroop test (`typoattack stroop`)."""

    def plan(self, cfg: StroopConfig, progress: ProgressReporter) -> Plan:
        colours, source, indices, stimuli = list_run_stimuli(cfg)
        check_models(cfg)
        fingerprint = build_fingerprint(cfg, [(c.name, c.rgb, c.as_word) for c in colours.colours])
        inputs = StroopInputs(colours, tuple(stimuli), tuple(indices))
        cells = cut_cells(self.name, cfg, tuple(range(len(stimuli))), resolve_chunk_size(cfg.chunk_size, 1).items,
                          shared=lambda m_index: inputs)
        backgrounds = cfg.background_colours + [IMAGE_BACKGROUND_PREFIX + source.items[i].image_id
                                                for i in indices] if source else cfg.background_colours
        info = {"colours": {"name": colours.name, "path": colours.path,
                            "colours": [{"name": c.name, "rgb": format_color(c.rgb), "word": c.as_word}
                                        for c in colours.colours]},
                "backgrounds": backgrounds, "n_stimuli": len(stimuli)}
        return Plan(fingerprint, cells, describe_run_device(cfg), len(stimuli), info, versions=get_backend_versions(cfg))

    def create_context(self, cell: Cell, progress: ProgressReporter) -> StroopContext:
        cfg: StroopConfig = cell.config
        inputs: StroopInputs = cell.shared
        model, load_seconds = load_model(cfg, cell.model_index, progress)
        t0 = time.perf_counter()
        names = inputs.colours.names
        classifier, cached = get_classifier(model, names, cfg.prompts, cfg.cache_dir,
                                            progress=progress.start("Colour classifier", len(names), "colours"))
        classifier_seconds = time.perf_counter() - t0
        source = open_image_source(DataSpec(cfg.background_data)) if cfg.background_data else None
        backgrounds = load_background_canvases(source, inputs.background_indices, model.geometry.transform)
        words = _list_words(inputs.stimuli)
        base_sizes = {font: get_base_size(words, font, model.canvas_size) for font in cfg.fonts}
        batch_size = resolve_batch_size(cfg.batch_size, model.device)
        # keyed as stroop.csv's `font` column, which collect_stroop_examples reads back
        info = {"weights_id": model.weights_id, "input_size": list(model.canvas_size),
                "base_font_sizes": {get_font_label(f): size for f, size in base_sizes.items()},
                "classifier_from_cache": cached, "batch_size": batch_size,
                "seconds": {"load_model": round(load_seconds, 3), "classifier": round(classifier_seconds, 3)}}
        return StroopContext(model, inputs, BatchEncoder(model, classifier, batch_size, progress), backgrounds,
                             base_sizes, info)

    def evaluate_cell(self, context: StroopContext, cell: Cell, advance: Callable[[int], None]) -> CellResult:
        import torch

        cfg: StroopConfig = cell.config
        model, colours = context.model, context.inputs.colours
        stimuli = [context.inputs.stimuli[i] for i in cell.items]
        class_index = {name: i for i, name in enumerate(colours.names)}
        ink_idx = np.array([class_index[s.ink] for s in stimuli])
        word_idx = np.array([class_index.get(s.word, -1) for s in stimuli])
        batch_size = context.info["batch_size"]
        preds, p_ink, p_word = [], [], []
        t0 = time.perf_counter()
        with torch.inference_mode():
            for start in range(0, len(stimuli), batch_size):
                batch = stimuli[start:start + batch_size]
                drawn = np.stack([render_stimulus(s, colours.get_rgb(s.ink), context.base_sizes[s.font],
                                                  model.canvas_size, cfg.seed, context.backgrounds.get(s.background))
                                  for s in batch])
                probs = torch.softmax(context.encoder(torch.from_numpy(drawn).to(model.device)).float(), dim=1)
                probs = probs.cpu().numpy()
                rows = np.arange(len(batch))
                preds.append(probs.argmax(axis=1))
                p_ink.append(probs[rows, ink_idx[start:start + len(batch)]])
                w = word_idx[start:start + len(batch)]
                p_word.append(np.where(w >= 0, probs[rows, np.maximum(w, 0)], np.nan))
                advance(len(batch))
        layouts = [get_layout(s, context.base_sizes[s.font], model.canvas_size, cfg.seed) for s in stimuli]
        spec = model.spec
        frame = pd.DataFrame({
            "model": spec.name, "pretrained": spec.pretrained or "",
            "ink": [s.ink for s in stimuli], "word": [s.word for s in stimuli],
            "condition": [s.condition.value for s in stimuli], "variant": [s.variant for s in stimuli],
            "font": [get_font_label(s.font) for s in stimuli], "background": [s.background for s in stimuli],
            "font_size": [lay[0] for lay in layouts], "x": [lay[1] for lay in layouts], "y": [lay[2] for lay in layouts],
            "pred": [colours.names[i] for i in np.concatenate(preds)],
            "p_ink": np.concatenate(p_ink).astype(np.float64), "p_word": np.concatenate(p_word).astype(np.float64),
        }, columns=STROOP_COLUMNS)
        model_info = {**context.info, "encoder_batch_size_final": context.encoder.max_batch}
        context.info = {k: v for k, v in context.info.items() if k != "seconds"}  # loading is counted once
        return CellResult(cell.cell_id, cell.model_index, frame, {}, model_info, time.perf_counter() - t0, len(frame))

    def write_tables(self, records: RecordSet, out: Path, info: RunInfo) -> pd.DataFrame:
        write_stroop_csv(records, out / STROOP_CSV)  # the records themselves, streamed in their order
        summary = query_stroop_summary(records)
        write_csv(summary, out / STROOP_SUMMARY_CSV)
        plot_stroop_matrix_records(records, out / STROOP_MATRIX_PNG)
        plot_stroop_examples(collect_stroop_examples(query_stroop_example_rows(records), info.to_dict()),
                             out / STROOP_EXAMPLES_PNG)
        return summary

    def show_summary(self, summary: pd.DataFrame, info: RunInfo | None, full: bool = False) -> list[Any]:
        """A heading, then per model a table titled with its name (as eval's summary: a long name
        wraps in the title instead of being cut in a column)."""
        from rich import box
        from rich.table import Table
        from rich.text import Text

        from typoattack.analysis.labels import get_model_label
        from typoattack.tasks.stroop.tables import build_stroop_summary_cells

        header, cells = build_stroop_summary_cells(summary)
        by_model: dict[tuple[str, str], list[list[str]]] = {}
        for row in cells:  # header[:2] is model, pretrained
            by_model.setdefault((row[0], row[1]), []).append(row[2:])
        out: list[Any] = [Text("Stroop test: share read as the ink vs as the written word", style="bold")]
        for (model, pretrained), rows in by_model.items():
            table = Table(title=Text(get_model_label(model, pretrained), style="bold"), title_justify="left",
                          box=box.SIMPLE_HEAD, pad_edge=False)
            for col in header[2:]:
                table.add_column(col, justify="right" if col in ("n",) or "[" in col else "left", overflow="fold")
            for row in rows:
                table.add_row(*row)
            out.append(table)
        return out

    def write_report(self, run_dirs: Sequence[Path], infos: Sequence[RunInfo], out: Path, stem: str,
                     notes: Sequence[str], progress: ProgressReporter) -> ReportPart:
        return write_stroop_report_page(run_dirs, infos, out, stem, notes, progress)


TASK = StroopTask()


def collect_stroop_examples(rows: pd.DataFrame, info: dict[str, Any],
                            backgrounds: dict[str, np.ndarray] | None = None) -> list[dict[str, Any]]:
    """Re-draw variant 0 of every (ink, word) in the first model's first font and background,
    with that model's prediction, for `plot_stroop_examples`.

    Args:
        rows: stroop.csv rows.
        info: The run's run.json.
        backgrounds: Photo backgrounds at the first model's input size, by name; when None and
            the first background is a photo, it is read again from the run's background data.

    Raises:
        TypoAttackError: A photo background cannot be read here.
    """
    from typoattack.attack.stroop import StroopCondition

    config, model = info["config"], info["models"][0]
    colours = {c["name"]: c["rgb"] for c in info["colours"]["colours"]}
    first = rows.iloc[0]
    mine = rows[(rows["model"] == first["model"]) & (rows["pretrained"] == first["pretrained"])
                & (rows["font"] == first["font"]) & (rows["background"] == first["background"]) & (rows["variant"] == 0)]
    canvas = (int(model["input_size"][0]), int(model["input_size"][1]))
    base_size = int(model["base_font_sizes"][first["font"]])
    background = str(first["background"])
    if background.startswith(IMAGE_BACKGROUND_PREFIX) and backgrounds is None:
        from typoattack.backends.registry import get_backend

        source = open_image_source(DataSpec(config["background_data"]))
        index = [i for i, item in enumerate(source.items) if IMAGE_BACKGROUND_PREFIX + item.image_id == background]
        spec = ModelSpec(model["name"], model["pretrained"], model.get("backend", DEFAULT_BACKEND))
        transform = get_backend(spec.backend).get_geometry(spec).transform
        backgrounds = load_background_canvases(source, index, transform)
    examples = []
    for r in mine.itertuples():
        stimulus = StroopStimulus(r.ink, r.word, StroopCondition(r.condition), 0, resolve_font_label(str(r.font)),
                                  background)
        image = render_stimulus(stimulus, _parse_hex(colours[r.ink]), base_size, canvas, int(config["seed"]),
                                (backgrounds or {}).get(background))
        examples.append({"ink": r.ink, "word": r.word, "image": image, "pred": r.pred})
    return examples


def _parse_hex(text: str) -> tuple[int, int, int]:
    return int(text[1:3], 16), int(text[3:5], 16), int(text[5:7], 16)


def get_stroop_records_path(run_dir: Path, info: RunInfo, scratch: Path) -> Path:
    """Where the rows of a complete Stroop run lie as Parquet: its records.parquet, or for a run
    written before records.parquet (stroop.csv alone, a small legacy run) its stroop.csv copied to
    the Parquet file `scratch`.

    Raises:
        OutputError: The run is incomplete, or has no rows.
    """
    run_dir = Path(run_dir)
    if (run_dir / RECORDS_FILE).exists() or not (run_dir / STROOP_CSV).is_file():
        check_whole_run(run_dir, info)
        return run_dir / RECORDS_FILE
    if not info.complete:
        raise OutputError(f"the Stroop run in {run_dir} is incomplete; rerun the same `typoattack stroop` command")
    read_stroop_csv(run_dir / STROOP_CSV).to_parquet(scratch, index=False)
    return scratch


def open_stroop_records(run_dirs: Sequence[Path], infos: Sequence[RunInfo], scratch: Path) -> RecordSet:
    """The rows of complete Stroop runs behind one query view (its `run` column: the position in
    `run_dirs`), never loaded whole: `open_run_records` when every run has records.parquet, else
    the runs' Parquet records beside legacy runs' stroop.csv converted into the folder `scratch`.

    Raises:
        OutputError: A run is incomplete, or has no rows.
    """
    dirs = [Path(d) for d in run_dirs]
    if all((d / RECORDS_FILE).exists() or not (d / STROOP_CSV).is_file() for d in dirs):
        return open_run_records(dirs, infos)
    return open_records([get_stroop_records_path(d, info, Path(scratch) / f"{k:05d}.parquet")
                         for k, (d, info) in enumerate(zip(dirs, infos))], defaults=RECORD_DEFAULTS)


def write_stroop_report_page(run_dirs: Sequence[Path], infos: Sequence[RunInfo], out: Path, stem: str = "report",
                             notes: Sequence[str] = (), progress: ProgressReporter | None = None) -> ReportPart:
    """Rewrite each Stroop run's summary from its rows, then write the summary over all runs, the
    figures and `{stem}.md` / `{stem}.html` into `out`. Every table and figure is a query over the
    runs' records (`open_stroop_records`).

    Raises:
        OutputError: A run is incomplete, or two runs hold the same model and stimuli.
    """
    progress = progress or NullProgress()
    raw_infos = [i.to_dict() for i in infos]
    figures = [out / STROOP_MATRIX_PNG]
    key = ", ".join(quote_name(k) for k in ["model", "pretrained", "ink", "word", "variant", "font", "background"])
    with tempfile.TemporaryDirectory(prefix="typoattack-stroop-") as scratch, \
            open_stroop_records(run_dirs, infos, Path(scratch)) as records:
        for k, d in enumerate(run_dirs):
            write_csv(query_stroop_summary(records, f"run = {k}"), Path(d) / STROOP_SUMMARY_CSV)
        if records.scalar(f"SELECT count(*) FROM (SELECT {key} FROM records GROUP BY ALL HAVING count(*) > 1)"):
            raise OutputError("two of the Stroop runs hold the same model and stimuli; report runs of different "
                              "models or settings")
        out.mkdir(parents=True, exist_ok=True)
        summary = query_stroop_summary(records)
        write_csv(summary, out / STROOP_SUMMARY_CSV)
        plot_stroop_matrix_records(records, figures[0])
        add_optional_figure(figures, out / STROOP_EXAMPLES_PNG,
                            lambda: collect_stroop_examples(query_stroop_example_rows(records, "run = 0"),
                                                            raw_infos[0]),
                            plot_stroop_examples, progress.log, "the background images")
    _, html_path = write_stroop_report(out, summary, figures, raw_infos, stem=stem, notes=notes)
    return ReportPart(html_path, summary)
