"""The Stroop pipeline (`typoattack stroop`): draw the stimuli at each model's input size, classify
them zero-shot among the colour names, write stroop.csv, its summary, figures and run.json; and
the Stroop part of `typoattack report`."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from typoattack.analysis.report import read_run_info, write_csv
from typoattack.analysis.stroop import (
    RUN_KIND, STROOP_COLUMNS, STROOP_CSV, STROOP_EXAMPLES_PNG, STROOP_MATRIX_PNG, STROOP_SUMMARY_CSV,
    build_stroop_summary, is_stroop_run_info, read_stroop_csv, plot_stroop_examples, plot_stroop_matrix, write_stroop_report,
)
from typoattack.attack.stroop import (
    IMAGE_BACKGROUND_PREFIX, ColourSet, StroopStimulus, check_stimulus_glyphs, get_base_size, get_font_label, get_layout,
    list_stimuli, render_stimulus, resolve_font_label,
)
from typoattack.config.stroop import StroopConfig, load_colours
from typoattack.config.types import DataSpec, ModelSpec, format_color
from typoattack.data.sources import ImageSource, open_image_source, select_subset
from typoattack.errors import DataError, OutputError, TypoAttackError
from typoattack.running import rundir
from typoattack.running.progress import NullProgress, ProgressReporter

STROOP_FILES = (STROOP_CSV, STROOP_SUMMARY_CSV, STROOP_MATRIX_PNG, STROOP_EXAMPLES_PNG)


@dataclass
class StroopResult:
    """What `run_stroop` produced."""

    out_dir: Path
    rows: pd.DataFrame
    summary: pd.DataFrame
    info: dict[str, Any]


def get_stroop_fingerprint(cfg: StroopConfig, colours: ColourSet) -> str:
    """Hash of what determines the rows: the config's settings and the colour set's contents."""
    h = hashlib.sha256(cfg.fingerprint().encode())
    h.update(json.dumps([(c.name, c.rgb, c.as_word) for c in colours.colours]).encode())
    return h.hexdigest()


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


def run_stroop(cfg: StroopConfig, progress: ProgressReporter | None = None, overwrite: bool = False) -> StroopResult:
    """Run the Stroop test described by `cfg` and write its results to `cfg.out`.

    Every check that needs no model (colours, glyphs, device, weights, output folder) runs first.
    Per model: the classifier over the colour names (open_clip's `build_zero_shot_classifier`, the
    prompts averaged; cached on disk), then the stimuli drawn at the model's input size and
    encoded in batches.

    Returns:
        The rows (STROOP_COLUMNS), the summary and run.json's contents.

    Raises:
        TypoAttackError: A user-fixable problem (config, colours, font, weights, output folder).
    """
    from typoattack.models.loading import check_precision, check_weights_available, resolve_device

    progress = progress or NullProgress()
    out = rundir.get_out_dir(cfg.out)
    t_start = time.perf_counter()
    colours = load_colours(cfg.colours)
    source, image_indices = open_background_images(cfg.background_data, cfg.background_limit, cfg.seed)
    backgrounds = cfg.background_colours
    backgrounds += [IMAGE_BACKGROUND_PREFIX + source.items[i].image_id for i in image_indices] if source else []
    stimuli = list_stimuli(colours, cfg.neutral_word, cfg.fonts, backgrounds, cfg.variants)
    check_stimulus_glyphs(_list_words(stimuli), cfg.fonts)
    device = resolve_device(cfg.device)
    check_precision(cfg.precision, device)
    for spec in cfg.models:
        check_weights_available(spec)
    fingerprint = get_stroop_fingerprint(cfg, colours)
    previous = rundir.prepare_out_dir(out, fingerprint, overwrite)
    if overwrite:
        for name in STROOP_FILES:
            (out / name).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    for warning in cfg.model_warnings:
        progress.log(f"[bold yellow]{warning}[/]")
    info: dict[str, Any] = {
        "kind": RUN_KIND, "complete": False, "fingerprint": fingerprint, "config": cfg.to_dict(),
        "colours": {"name": colours.name, "path": colours.path,
                    "colours": [{"name": c.name, "rgb": format_color(c.rgb), "word": c.as_word}
                                for c in colours.colours]},
        "backgrounds": backgrounds, "n_stimuli": len(stimuli), "versions": rundir.get_versions(), "device": rundir.get_device_name(device),
        "seed": cfg.seed, "started": (previous or {}).get("started") or rundir.get_timestamp(), "models": [],
    }
    rundir.save_run_info(out, info)
    frames, examples_backgrounds = [], None
    for spec in cfg.models:
        frame, canvases = _evaluate_model(cfg, spec, colours, stimuli, (source, image_indices), device, info, progress)
        frames.append(frame)
        examples_backgrounds = canvases if examples_backgrounds is None else examples_backgrounds
    rows = pd.concat(frames, ignore_index=True)
    write_csv(rows, out / STROOP_CSV)
    rows = read_stroop_csv(out / STROOP_CSV)
    summary = build_stroop_summary(rows)
    write_csv(summary, out / STROOP_SUMMARY_CSV)
    plot_stroop_matrix(rows, out / STROOP_MATRIX_PNG)
    plot_stroop_examples(collect_stroop_examples(rows, info, examples_backgrounds), out / STROOP_EXAMPLES_PNG)
    info.update(complete=True, n_rows=len(rows), finished=rundir.get_timestamp(),
                seconds_total_this_session=round(time.perf_counter() - t_start, 3))
    rundir.save_run_info(out, info)
    return StroopResult(out, rows, summary, info)


def _evaluate_model(cfg: StroopConfig, spec: ModelSpec, colours: ColourSet, stimuli: list[StroopStimulus],
                    images: tuple[ImageSource | None, list[int]], device: Any, info: dict[str, Any],
                    progress: ProgressReporter) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Load one model, build its colour classifier and classify every stimulus; append the model's
    entry to run.json's `models`. Returns the rows and the photo backgrounds at its input size."""
    import torch

    from typoattack.models.classify import build_classifier
    from typoattack.models.loading import create_model
    from typoattack.running.evaluate import BatchEncoder, resolve_batch_size

    t0 = time.perf_counter()
    progress.log(f"Loading {spec.label} on {device}")
    loaded = create_model(spec, device, cfg.precision)
    seconds = {"load_model": round(time.perf_counter() - t0, 3)}
    t0 = time.perf_counter()
    classifier, cached = build_classifier(loaded, colours.names, cfg.prompts, cfg.cache_dir,
                                          progress=progress.start(f"Colour classifier {spec.label}", len(colours.names)))
    seconds["classifier"] = round(time.perf_counter() - t0, 3)
    canvases = load_background_canvases(images[0], images[1], loaded.canvas_transform)
    words = _list_words(stimuli)
    base_sizes = {font: get_base_size(words, font, loaded.canvas_size) for font in cfg.fonts}
    batch_size = resolve_batch_size(cfg.batch_size, device)
    encoder = BatchEncoder(loaded, classifier, batch_size, progress)
    class_index = {name: i for i, name in enumerate(colours.names)}
    ink_idx = np.array([class_index[s.ink] for s in stimuli])
    word_idx = np.array([class_index.get(s.word, -1) for s in stimuli])
    preds, p_ink, p_word = [], [], []
    advance = progress.start(f"Stroop stimuli {spec.label}", len(stimuli))
    t0 = time.perf_counter()
    with torch.inference_mode():
        for start in range(0, len(stimuli), batch_size):
            batch = stimuli[start:start + batch_size]
            drawn = np.stack([render_stimulus(s, colours.get_rgb(s.ink), base_sizes[s.font], loaded.canvas_size,
                                              cfg.seed, canvases.get(s.background)) for s in batch])
            probs = torch.softmax(encoder(torch.from_numpy(drawn).to(device)).float(), dim=1).cpu().numpy()
            rows = np.arange(len(batch))
            preds.append(probs.argmax(axis=1))
            p_ink.append(probs[rows, ink_idx[start:start + len(batch)]])
            w = word_idx[start:start + len(batch)]
            p_word.append(np.where(w >= 0, probs[rows, np.maximum(w, 0)], np.nan))
            advance(len(batch))
    seconds["evaluate"] = round(time.perf_counter() - t0, 3)
    layouts = [get_layout(s, base_sizes[s.font], loaded.canvas_size, cfg.seed) for s in stimuli]
    frame = pd.DataFrame({
        "model": spec.name, "pretrained": spec.pretrained or "",
        "ink": [s.ink for s in stimuli], "word": [s.word for s in stimuli],
        "condition": [s.condition.value for s in stimuli], "variant": [s.variant for s in stimuli],
        "font": [get_font_label(s.font) for s in stimuli], "background": [s.background for s in stimuli],
        "font_size": [lay[0] for lay in layouts], "x": [lay[1] for lay in layouts], "y": [lay[2] for lay in layouts],
        "pred": [colours.names[i] for i in np.concatenate(preds)],
        "p_ink": np.concatenate(p_ink).astype(np.float64), "p_word": np.concatenate(p_word).astype(np.float64),
    }, columns=STROOP_COLUMNS)
    info["models"].append({"name": spec.name, "pretrained": spec.pretrained, "weights_id": loaded.weights_id,
                           "canvas_size": list(loaded.canvas_size),
                           # keyed as stroop.csv's `font` column, which collect_stroop_examples reads back
                           "base_font_sizes": {get_font_label(f): size for f, size in base_sizes.items()},
                           "n_images": len(stimuli), "classifier_from_cache": cached, "batch_size": batch_size,
                           "encoder_batch_size_final": encoder.max_batch, "seconds": seconds})
    return frame, canvases


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
    canvas = (int(model["canvas_size"][0]), int(model["canvas_size"][1]))
    base_size = int(model["base_font_sizes"][first["font"]])
    background = str(first["background"])
    if background.startswith(IMAGE_BACKGROUND_PREFIX) and backgrounds is None:
        from typoattack.models.loading import get_canvas_transform

        source = open_image_source(DataSpec(config["background_data"]))
        index = [i for i, item in enumerate(source.items) if IMAGE_BACKGROUND_PREFIX + item.image_id == background]
        transform, _, _ = get_canvas_transform(ModelSpec(model["name"], model["pretrained"]))
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


def load_stroop_rows(run_dir: Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    """stroop.csv and run.json of a complete Stroop run.

    Raises:
        OutputError: The run is incomplete or its stroop.csv is missing.
    """
    info = read_run_info(run_dir)
    if not info.get("complete", False):
        raise OutputError(f"the Stroop run in {run_dir} is incomplete; rerun the same `typoattack stroop` command")
    path = Path(run_dir) / STROOP_CSV
    if not path.is_file():
        raise OutputError(f"{run_dir} has no {STROOP_CSV}")
    return read_stroop_csv(path), info


def is_stroop_run(run_dir: Path) -> bool:
    """True when `run_dir` holds a run.json written by `typoattack stroop`."""
    try:
        return is_stroop_run_info(read_run_info(run_dir))
    except OutputError:
        return False


def run_stroop_report(run_dirs: Sequence[Path], out: Path, stem: str = "report",
                      progress: ProgressReporter | None = None) -> pd.DataFrame:
    """Rewrite each Stroop run's summary from its stroop.csv, then write the summary over all runs,
    the figures and `{stem}.md` / `{stem}.html` into `out`.

    Returns:
        The summary over all runs.

    Raises:
        OutputError: A run is incomplete, or two runs hold the same model and stimuli.
    """
    progress = progress or NullProgress()
    frames, infos = [], []
    for d in run_dirs:
        rows, info = load_stroop_rows(Path(d))
        write_csv(build_stroop_summary(rows), Path(d) / STROOP_SUMMARY_CSV)
        frames.append(rows)
        infos.append(info)
    rows = pd.concat(frames, ignore_index=True)
    key = ["model", "pretrained", "ink", "word", "variant", "font", "background"]
    if rows.duplicated(key).any():
        raise OutputError("two of the Stroop runs hold the same model and stimuli; report runs of different models "
                          "or settings")
    out.mkdir(parents=True, exist_ok=True)
    summary = build_stroop_summary(rows)
    write_csv(summary, out / STROOP_SUMMARY_CSV)
    figures = [out / STROOP_MATRIX_PNG, out / STROOP_EXAMPLES_PNG]
    plot_stroop_matrix(rows, figures[0])
    try:
        examples = collect_stroop_examples(frames[0], infos[0])
    except TypoAttackError as e:
        progress.log(f"[yellow]{STROOP_EXAMPLES_PNG} skipped: the background images cannot be read here ({e})[/]")
        figures.pop()
    else:
        plot_stroop_examples(examples, figures[1])
    write_stroop_report(out, summary, figures, infos, stem=stem)
    return summary
