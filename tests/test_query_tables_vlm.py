"""The vlm tables as out-of-core queries (`typoattack.tasks.vlm.tables`) against their pandas reference, and the
vlm report page's per-word ASR section and re-rendered examples.

Random small record sets (several models, prompts, orders, words, conditions, chunks of any size, rows in any
order) are written as Parquet chunk files into a records folder and opened with `open_records`; every query table
must equal the pandas reference over the same records read in the same order (floats of means within rtol 1e-9;
the summary and per-word CSVs byte for byte)."""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from typoattack.analysis.query import list_record_files, open_records
from typoattack.attack.render import apply_attack
from typoattack.attack.solver import create_attack_mask
from typoattack.backends.open_clip.model import create_geometry
from typoattack.constants import SAMPLE_DIR
from typoattack.data.classes import list_class_names
from typoattack.data.sources import open_image_source
from typoattack.data.vocab import load_vocab
from typoattack.engine.rundir import RunInfo, open_run_records, read_run_info
from typoattack.files import write_csv
from typoattack.records import list_conditions
from typoattack.tasks.vlm.config import load_vlm_config
from typoattack.tasks.vlm.prompts import OptionOrder, build_question, resolve_prompts
from typoattack.tasks.vlm.tables import (
    REAL_COLUMNS, REAL_WORD_KEYS, SYNTHETIC_COLUMNS, VLM_RECORD_COLUMNS, build_per_word, build_summary, count_choices,
    count_word_outcomes, get_summary_keys, is_synthetic, query_choice_counts, query_per_word, query_summary,
    query_word_counts, write_vlm_tables,
)

RTOL = 1e-9
STYLES = [("DejaVuSans-Bold.ttf", "#ffffff", "#000000", 1, 1.0), ("DejaVuSans.ttf", "#ff0000", "#000000", 0, 0.5)]
WORDS = [("pizza", 963), ("dog", 252), ("iPod", 605), ("pizza", 252), ("a b", 1)]
"""(text, target): the same text may aim at two targets."""
CLEAN_STYLE = {"font": "", "fill": "", "outline": "", "outline_width": -1, "opacity": math.nan}
SAMPLE_SIZE = 32


# --- random record sets ------------------------------------------------------------------------------------------

def _model_rows(rng: np.random.Generator, m: int, spec: dict) -> list[list[dict]]:
    """The records of one model, image by image (each image's rows in the task's order: clean controls per
    target, then every condition; prompts, then orders, inside)."""
    scoring = spec["scorings"][m % len(spec["scorings"])]
    choices = ["object", "attack", "unclear"] if scoring == "generate" else ["object", "attack"]
    p = rng.dirichlet(np.ones(len(choices)))
    base = {"model": f"org/model-{m}", "weights_id": f"org/model-{m}@{m:04x}", "scoring": scoring}
    names = list_class_names()
    images = []
    for i in range(spec["n_images"]):
        rows = []
        if spec["synthetic"]:
            true = int(rng.choice([1, 2, 963, 252, 7]))
            jobs = [({"word": "", "target_index": t, "fraction": 0.0, "placement": "", **CLEAN_STYLE}, names[t])
                    for t in dict.fromkeys(t for _, t in spec["words"]) if t != true]
            jobs += [({"word": w, "target_index": t, "fraction": f, "placement": pl,
                       **dict(zip(["font", "fill", "outline", "outline_width", "opacity"], style))}, names[t])
                     for w, t in spec["words"] for f in spec["fractions"] for pl in spec["placements"]
                     for style in spec["styles"] if t != true]
            jobs = [({**c, "true_index": true,
                      "pixel_cover": 0.0 if not c["word"] else float(rng.choice([0.05, 0.1, rng.uniform(0, 0.4)]))},
                     attack) for c, attack in jobs]
            obj = names[true]
        else:
            word = str(rng.choice(["cat", "ipod", "good", "library"]))
            variant = str(rng.choice(spec["variants"]))
            jobs = [({"photo_id": f"p{i // 2}", "dataset": spec["dataset"], "variant": variant,
                      "postit_area_pct": float(rng.choice([math.nan, rng.uniform(1, 20)]))}, word)]
            obj = str(rng.choice(["apple", "dog", "chair"]))
        for columns, attack in jobs:
            for prompt in spec["prompts"]:
                for order in spec["orders"]:
                    choice = str(rng.choice(choices, p=p))
                    rows.append({"image_id": f"img{i}.JPEG", **base, "prompt_id": prompt,
                                 "safe_prompt": prompt in ("5", "7"), "order": order, "object_label": obj,
                                 "attack_label": attack, "choice": choice,
                                 "logp_object": math.nan if scoring == "generate" else -rng.exponential(),
                                 "logp_attack": math.nan if scoring == "generate" else -rng.exponential(),
                                 "answer": str(rng.choice(["(a)", "b", "maybe"])) if scoring == "generate" else "",
                                 **columns})
        images.append(rows)
    return images


def _frame(rows: list[dict], synthetic: bool) -> pd.DataFrame:
    columns = [*VLM_RECORD_COLUMNS, *(SYNTHETIC_COLUMNS if synthetic else REAL_COLUMNS)]
    dtypes = {"safe_prompt": bool, "logp_object": np.float64, "logp_attack": np.float64}
    dtypes.update({"true_index": np.int64, "target_index": np.int64, "fraction": np.float64, "outline_width": np.int64,
                   "opacity": np.float64, "pixel_cover": np.float64} if synthetic else {"postit_area_pct": np.float64})
    return pd.DataFrame(rows, columns=columns).astype(dtypes)


def write_run_records(folder: Path, rng: np.random.Generator, spec: dict, models: range) -> pd.DataFrame:
    """Write the records of `models` as chunk files `records.parquet/NN-model/SSSSS.parquet` (rows of a chunk
    shuffled when spec says, an empty chunk added when it says); return them as pandas reads them, in the files'
    order."""
    root = folder / "records.parquet"
    for m in models:
        images = _model_rows(rng, m, spec)
        size = spec["chunk_size"]
        chunks = [sum(images[k:k + size], []) for k in range(0, len(images), size)]
        if spec["empty_chunk"]:
            chunks.append([])
        for s, rows in enumerate(chunks):
            frame = _frame(rows, spec["synthetic"])
            if spec["shuffle"]:
                frame = frame.sample(frac=1.0, random_state=int(rng.integers(2**31))).reset_index(drop=True)
            if spec.get("drop_clean") and len(frame):
                clean = frame.index[frame["word"] == ""]
                frame = frame.drop(clean[rng.random(len(clean)) < 0.3]).reset_index(drop=True)
            path = root / f"{m:02d}-org_model-{m}" / f"{s:05d}.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path)
    frames = [pd.read_parquet(p) for p in list_record_files(root)]
    # An empty chunk's text columns have no type in Parquet (pandas reads them as object): it adds no row.
    return pd.concat([f for f in frames if len(f)] or frames, ignore_index=True)


@st.composite
def record_specs(draw: st.DrawFn, synthetic: bool) -> dict:
    spec = {
        "synthetic": synthetic, "seed": draw(st.integers(0, 2**32 - 1)), "n_models": draw(st.integers(1, 3)),
        "n_images": draw(st.integers(1, 5)), "chunk_size": draw(st.integers(1, 4)),
        "prompts": draw(st.lists(st.sampled_from(["1", "3", "5", "7"]), min_size=1, max_size=3, unique=True)),
        "orders": draw(st.sampled_from([["object-first", "attack-first"], ["attack-first"], ["object-first"]])),
        "scorings": draw(st.lists(st.sampled_from(["likelihood", "generate"]), min_size=1, max_size=2)),
        "shuffle": draw(st.booleans()), "empty_chunk": draw(st.booleans()), "n_runs": draw(st.integers(1, 2)),
    }
    if synthetic:
        spec.update(words=draw(st.lists(st.sampled_from(WORDS), max_size=3, unique=True)),
                    fractions=draw(st.lists(st.sampled_from([0.05, 0.1, 0.2]), min_size=1, max_size=2, unique=True)),
                    placements=draw(st.lists(st.sampled_from(["center", "random"]), min_size=1, max_size=2,
                                             unique=True)),
                    styles=draw(st.lists(st.sampled_from(STYLES), min_size=1, max_size=2, unique=True)),
                    drop_clean=draw(st.booleans()))
    else:
        spec.update(dataset=draw(st.sampled_from(["rta100", "scam"])),
                    variants=draw(st.lists(st.sampled_from(["attacked", "clean", "blank"]), min_size=1, max_size=3,
                                           unique=True)))
    return spec


def _write_runs(tmp: Path, spec: dict) -> tuple[list[Path], pd.DataFrame]:
    """The spec's models split over `n_runs` run folders; the reference is their records concatenated in run
    order."""
    rng = np.random.default_rng(spec["seed"])
    n_runs = min(spec["n_runs"], spec["n_models"])
    bounds = np.linspace(0, spec["n_models"], n_runs + 1).astype(int)
    folders, frames = [], []
    for k in range(n_runs):
        folders.append(tmp / f"run{k}")
        frames.append(write_run_records(folders[-1], rng, spec, range(bounds[k], bounds[k + 1])))
    return [f / "records.parquet" for f in folders], pd.concat(frames, ignore_index=True)


def _csv_bytes(frame: pd.DataFrame, path: Path) -> bytes:
    write_csv(frame, path)
    return path.read_bytes()


def check_query_tables(sources: list[Path], reference: pd.DataFrame, tmp: Path) -> None:
    """Every vlm query table of the records in `sources` equals its pandas reference over `reference`."""
    with open_records(sources) as records:
        assert is_synthetic(records) == is_synthetic(reference)
        keys = get_summary_keys(records)
        assert keys == get_summary_keys(reference)
        pd.testing.assert_frame_equal(query_choice_counts(records, keys), count_choices(reference, keys))
        summary = query_summary(records, keys)
        pd.testing.assert_frame_equal(summary, build_summary(reference, keys), rtol=RTOL)
        assert _csv_bytes(summary, tmp / "q.csv") == _csv_bytes(build_summary(reference, keys), tmp / "r.csv")
        counts = query_word_counts(records)
        expected = (count_word_outcomes(reference) if is_synthetic(reference)
                    else count_choices(reference, REAL_WORD_KEYS))
        if len(expected):
            pd.testing.assert_frame_equal(counts, expected, rtol=RTOL, check_dtype=False)  # target_name: str or object
        else:  # no attacked record: the same empty table (pandas' has no dtypes to compare)
            assert counts.empty and list(counts.columns) == list(expected.columns)
        per_word = query_per_word(records)
        pd.testing.assert_frame_equal(per_word, build_per_word(reference), rtol=RTOL)
        if is_synthetic(reference) and len(per_word):
            pixel = ["pixel_cover_mean"]
            assert (_csv_bytes(per_word.drop(columns=pixel), tmp / "q.csv")
                    == _csv_bytes(build_per_word(reference).drop(columns=pixel), tmp / "r.csv"))


_SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_SETTINGS
@given(record_specs(synthetic=True))
def test_synthetic_query_tables_equal_the_pandas_reference(spec) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        sources, reference = _write_runs(Path(tmp), spec)
        assume(len(reference) > 0)
        check_query_tables(sources, reference, Path(tmp))


@_SETTINGS
@given(record_specs(synthetic=False))
def test_real_query_tables_equal_the_pandas_reference(spec) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        sources, reference = _write_runs(Path(tmp), spec)
        check_query_tables(sources, reference, Path(tmp))


def _fixed_spec(**changes) -> dict:
    spec = {"synthetic": True, "seed": 3, "n_models": 3, "n_images": 5, "chunk_size": 2, "prompts": ["1", "5"],
            "orders": ["object-first", "attack-first"], "scorings": ["likelihood", "generate"], "shuffle": True,
            "empty_chunk": True, "n_runs": 2, "words": WORDS[:4], "fractions": [0.05, 0.2],
            "placements": ["center", "random"], "styles": STYLES, "drop_clean": True}
    return {**spec, **changes}


def test_several_models_runs_and_conditions(tmp_path) -> None:
    sources, reference = _write_runs(tmp_path, _fixed_spec())
    attacked = reference[reference["word"] != ""]
    assert reference["model"].nunique() == 3 and len(attacked[["word", "target_index"]].drop_duplicates()) == 4
    check_query_tables(sources, reference, tmp_path)
    with open_records(sources) as records:
        per_word = query_per_word(records)
    assert (per_word["n_pairs"] < per_word["n"]).any()  # some attacked records lost their clean control
    assert per_word["target_name"].tolist() == [list_class_names()[t] for t in per_word["target_index"]]


def test_records_without_attacks_give_an_empty_per_word_table(tmp_path) -> None:
    sources, reference = _write_runs(tmp_path, _fixed_spec(words=[("pizza", 963)], n_runs=1))
    clean_only = tmp_path / "clean" / "records.parquet" / "00-x"
    clean_only.mkdir(parents=True)
    only = reference[reference["word"] == ""].reset_index(drop=True)
    pq.write_table(pa.Table.from_pandas(only, preserve_index=False), clean_only / "00000.parquet")
    with open_records(clean_only.parent) as records:
        per_word = query_per_word(records)
    assert per_word.empty and list(per_word.columns) == list(build_per_word(only).columns)


def test_two_clean_controls_of_one_question_are_an_error(tmp_path) -> None:
    sources, reference = _write_runs(tmp_path, _fixed_spec(n_runs=1, drop_clean=False, shuffle=False))
    clean = reference[reference["word"] == ""].iloc[:1]
    twice = tmp_path / "twice" / "records.parquet" / "00-x"
    twice.mkdir(parents=True)
    doubled = pd.concat([reference, clean], ignore_index=True)
    pq.write_table(pa.Table.from_pandas(doubled, preserve_index=False), twice / "00000.parquet")
    with pytest.raises(ValueError):
        count_word_outcomes(doubled)
    with open_records(twice.parent) as records, pytest.raises(ValueError, match="two clean controls"):
        query_word_counts(records)


def test_write_vlm_tables_writes_the_reference_csvs(tmp_path) -> None:
    sources, reference = _write_runs(tmp_path, _fixed_spec(n_runs=1, drop_clean=False))
    with open_records(sources) as records:
        summary = write_vlm_tables(records, tmp_path)
    pd.testing.assert_frame_equal(summary, build_summary(reference, get_summary_keys(reference)))
    assert (tmp_path / "summary.csv").read_bytes() == _csv_bytes(build_summary(reference, get_summary_keys(reference)),
                                                                   tmp_path / "r.csv")
    assert (tmp_path / "per_word.csv").read_bytes() == _csv_bytes(build_per_word(reference), tmp_path / "r.csv")


# --- the report page ----------------------------------------------------------------------------------------------

def make_vlm_run(folder: Path, data: Path = SAMPLE_DIR, n_images: int = 4, seed: int = 0) -> Path:
    """A complete synthetic vlm run folder without a model: the sample images' canvases drawn as the task draws
    them (open_clip's eval transform at the canvas size, the attack composited on it), random answers."""
    vocab = folder.parent / "vocab.yaml"
    vocab.parent.mkdir(parents=True, exist_ok=True)
    vocab.write_text("name: two\nwords:\n  - {text: pizza, target: pizza}\n  - {text: dog, target: 252}\n")
    cfg = load_vlm_config(None, {"model": ["org/tiny-vlm"], "data": str(data), "vocab": str(vocab),
                                 "fractions": [0.1, 0.2], "placements": ["center", "random"], "prompt": ["1", "5"],
                                 "seed": seed, "out": str(folder)})
    conditions = list_conditions(cfg, load_vocab(cfg.vocab))
    prompts = resolve_prompts(cfg.question_prompts)
    source = open_image_source(cfg.data)
    names = list_class_names()
    transform = create_geometry(size=SAMPLE_SIZE).transform
    rng = np.random.default_rng(seed)
    rows = []
    for index in range(n_images):
        item = source.items[index]
        canvas = np.asarray(transform(source.open_image(index)), dtype=np.uint8)
        jobs = [({"word": "", "target_index": t, "fraction": 0.0, "placement": "", **CLEAN_STYLE}, 0.0)
                for t in dict.fromkeys(c.target_index for c in conditions) if t != item.true_index]
        for c in conditions:
            if c.target_index != item.true_index:
                mask = create_attack_mask(c.word, c.fraction, c.placement, c.style, (SAMPLE_SIZE, SAMPLE_SIZE))
                jobs.append((c.to_columns(), apply_attack(canvas, mask, item.image_id, seed)[1]))
        for columns, cover in jobs:
            for prompt in prompts:
                for order in ("object-first", "attack-first"):
                    rows.append({"image_id": item.image_id, "model": "org/tiny-vlm", "weights_id": "org/tiny-vlm@abc",
                                 "scoring": "likelihood", "prompt_id": prompt.prompt_id, "safe_prompt": prompt.safe,
                                 "order": order, "object_label": names[item.true_index],
                                 "attack_label": names[columns["target_index"]],
                                 "choice": str(rng.choice(["object", "attack"])), "logp_object": -rng.exponential(),
                                 "logp_attack": -rng.exponential(), "answer": "", "true_index": item.true_index,
                                 **columns, "pixel_cover": cover})
    frame = _frame(rows, True)
    cells = []
    for s, part in enumerate(np.array_split(np.arange(len(frame)), 2)):
        cells.append(f"00-org_tiny-vlm/{s:05d}")
        path = folder / "records.parquet" / f"{cells[-1]}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pandas(frame.iloc[part], preserve_index=False), path)
    info = RunInfo("vlm", "test", cfg.to_dict(), cells=cells, n_items=n_images, chunks_total=2, chunks_done=2,
                   complete=True, n_records=len(frame),
                   models=[{"name": "org/tiny-vlm", "pretrained": None, "backend": "transformers",
                            "weights_id": "org/tiny-vlm@abc", "canvas_size": [SAMPLE_SIZE, SAMPLE_SIZE]}],
                   extra={"prompts": [{"id": p.prompt_id, "text": p.text, "safe": p.safe} for p in prompts],
                          "orders": ["object-first", "attack-first"]})
    (folder / "run.json").write_text(json.dumps(info.to_dict()))
    return folder


def _report(tmp_path: Path, run: Path, name: str = "report") -> tuple[str, str]:
    from typoattack.tasks.vlm.report import write_vlm_report_page

    out = tmp_path / name
    part = write_vlm_report_page([run], [read_run_info(run)], out, "report", [])
    return part.html.read_text(), (out / "report.md").read_text()


def test_report_has_the_per_word_section_and_the_examples(tmp_path) -> None:
    run = make_vlm_run(tmp_path / "run")
    html, md = _report(tmp_path, run)
    reference = pd.read_parquet(run / "records.parquet")
    assert (run / "per_word.csv").read_bytes() == _csv_bytes(build_per_word(reference), tmp_path / "r.csv")
    section = md[md.index("## Attack words"):md.index("## Prompts")]
    assert "### org/tiny-vlm — likelihood scoring" in section and "per_word.csv" in section
    header = next(line for line in section.splitlines() if line.startswith("| rank"))
    assert header == "| rank | word | target | pairs | ASR [95% CI] | prompt 1 | prompt 5 (safe) |"
    assert "model" not in header and section.count("| 1 |") == 1 and "| 2 |" in section
    assert (tmp_path / "report" / "vlm_examples.png").is_file()
    assert 'alt="vlm_examples"' in html and "<h2 id=" in html and "Examples" in html
    examples = md[md.index("## Examples"):md.index("## Runs")]
    first = reference[(reference["word"] == "") & (reference["prompt_id"] == "1")
                      & (reference["order"] == "object-first")]
    questions = {build_question(resolve_prompts(["1"])[0], r.object_label, r.attack_label, OptionOrder(r.order))
                 .replace("\n", " / ") for r in first.itertuples()}
    assert any(q in examples for q in questions)
    assert "log p object" in examples and "fraction 0.1 · center" in examples


def test_examples_are_the_canvases_the_run_drew(tmp_path) -> None:
    from typoattack.tasks.vlm.attack_words import rank_attack_words
    from typoattack.tasks.vlm.examples import render_examples, select_example_questions

    run = make_vlm_run(tmp_path / "run")
    info = read_run_info(run)
    transform = create_geometry(size=SAMPLE_SIZE).transform
    source = open_image_source(load_vlm_config(None, {"model": ["x"], "data": str(SAMPLE_DIR)}).data)
    index = {item.image_id: i for i, item in enumerate(source.items)}
    with open_run_records([run], [info]) as records:
        ranking = rank_attack_words(query_word_counts(records), True)
        questions = select_example_questions(records, info.to_dict(), ranking)
    assert questions and len({q.word for q in questions}) == 2
    examples = render_examples(questions, info.to_dict())
    covers = {(q.image_id, r["word"], r["fraction"], r["placement"]): r["pixel_cover"]
              for q in questions for _, r in q.attacked}
    assert len(examples) == sum(len(q.attacked) for q in questions)
    for q in questions:
        assert q.clean["prompt_id"] == "1" and q.clean["order"] == "object-first" and q.clean["word"] == ""
        assert all(r["image_id"] == q.image_id and r["target_index"] == q.clean["target_index"] for _, r in q.attacked)
    for k, ex in enumerate(examples):
        canvas = np.asarray(transform(source.open_image(index[ex["image_id"]])), dtype=np.uint8)
        np.testing.assert_array_equal(ex["clean_image"], canvas)
        changed = np.count_nonzero((ex["image"] != ex["clean_image"]).any(axis=-1)) / (SAMPLE_SIZE * SAMPLE_SIZE)
        fraction, placement = ex["condition"].split(" · ")[:2]
        key = (ex["image_id"], ex["word"], float(fraction.split()[1]), placement)
        assert changed == pytest.approx(covers[key], abs=1e-12), key


def test_report_without_the_source_images_skips_the_examples_with_a_note(tmp_path) -> None:
    import shutil

    data = tmp_path / "images"
    shutil.copytree(SAMPLE_DIR, data)
    run = make_vlm_run(tmp_path / "run", data=data)
    shutil.rmtree(data)
    html, md = _report(tmp_path, run)
    assert not (tmp_path / "report" / "vlm_examples.png").exists()
    assert "vlm_examples.png skipped" in md and "## Attack words" in md
    assert "| word → target | image | canvas | question | answer | score |" in md  # the answers are still listed


def test_many_words_show_the_highest_and_lowest_under_one_heading_per_model() -> None:
    from typoattack.tasks.vlm.attack_words import build_word_blocks

    rng = np.random.default_rng(0)
    rows = []
    for model in ("org/a", "org/b"):
        for w in range(50):
            for prompt in ("1", "5"):
                n = int(rng.integers(5, 20))
                rows.append({"model": model, "weights_id": model + "@1", "scoring": "likelihood", "prompt_id": prompt,
                             "safe_prompt": prompt == "5", "word": f"w{w:02d}", "target_index": w, "fraction": 0.1,
                             "placement": "center", "target_name": f"class {w}", "n_pairs": n,
                             "n_hit": int(rng.integers(0, n + 1))})
    counts = pd.DataFrame(rows)
    blocks = build_word_blocks(counts, True, "per_word.csv")
    headings = [b.text for b in blocks if b.kind == "h3"]
    assert headings == ["org/a — likelihood scoring", "org/b — likelihood scoring"]
    tables = [b for b in blocks if b.kind == "table"]
    for table in tables:
        assert len(table.cells) == 20 + 1 + 20 and table.cells[20][:2] == ("…", "10 more")
        assert [c[0] for c in table.cells[:20]] == [str(k) for k in range(1, 21)]
        assert [c[0] for c in table.cells[21:]] == [str(k) for k in range(31, 51)]
        assert "model" not in table.header
        rates = [float(c[4].split("%")[0]) for c in table.cells if c[0] != "…"]
        assert rates == sorted(rates, reverse=True)
    few = build_word_blocks(counts[counts["word"] < "w10"], True, "per_word.csv")
    assert all(len(b.cells) == 10 for b in few if b.kind == "table")
