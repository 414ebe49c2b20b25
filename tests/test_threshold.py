"""`typoattack threshold`: the search recovers known thresholds (a model whose decision flips exactly when the
measured cover passes a per-image threshold), agrees with `typoattack eval` at every recorded bracket on
the demo model, runs end to end through the CLI and resumes; its tables (queries) equal their pandas
reference; its one-blend compositing equals eval's bit for bit."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

import cover_backend
from typoattack.analysis.query import open_records
from typoattack.attack.compose import composite_batch, get_offsets, upload_mask
from typoattack.attack.solver import create_attack_mask
from typoattack.backends import registry
from typoattack.cli import app
from typoattack.config.types import Placement, RenderStyle
from typoattack.engine.rundir import read_run_info
from typoattack.errors import ConfigError
from typoattack.tasks.threshold.config import load_threshold_config
from typoattack.tasks.threshold.evaluate import MaskPixels, composite_jobs
from typoattack.tasks.threshold.search import (
    AT_MIN, CLEAN, CLEAN_IS_TARGET, CLEAN_WRONG, FOUND, NOT_REACHED, REASONS, UNREACHABLE, SeriesRange,
    get_lattice_fraction, search_thresholds,
)
from typoattack.tasks.threshold.tables import (
    LEADERBOARD_CSV, PER_WORD_CSV, THRESHOLD_COLUMNS, build_leaderboard_reference,
    build_per_word_threshold_reference, query_leaderboard, query_per_word_threshold,
)

runner = CliRunner()
DEMO = ["--data", "sample", "--device", "cpu", "--workers", "0", "--templates", "simple"]


def _vocab(path: Path, *words: tuple[str, str]) -> Path:
    path.write_text("name: test\nwords:\n" + "".join(f"  - {{text: '{w}', target: '{t}'}}\n" for w, t in words))
    return path


# ---------------------------------------------------------------------------------------------------------
# The search alone, against a rule.

def _rule_evaluator(thresholds: np.ndarray, lattice: np.ndarray, target: int, trues: np.ndarray,
                    dips: dict[int, tuple[float, float]] | None = None):
    """Predict `target` once the fraction reaches the image's threshold (dips: image -> (a, b), a range of
    fractions where it does not); clean jobs predict the true class."""
    calls = []

    def evaluate(image, series, j):
        calls.append(len(image))
        f = np.where(series == CLEAN, 0.0, lattice[np.maximum(j, 0)])
        hit = f >= thresholds[image]
        for i, (a, b) in (dips or {}).items():
            hit &= ~((image == i) & (f >= a) & (f < b))
        pred = np.where(hit, target, trues[image])
        return pred[:, None], f

    return evaluate, calls


def test_the_search_brackets_each_threshold_within_one_lattice_step() -> None:
    lo, hi, grid, steps = 0.004, 0.25, 5, 6
    n = (grid - 1) * 2 ** steps
    lattice = get_lattice_fraction(lo, hi, n, np.arange(n + 1))
    thresholds = np.array([0.001, 0.0071, 0.013, 0.05, 0.2, 0.3, 0.02])
    trues = np.array([1, 2, 3, 4, 5, 6, 7])
    evaluate, calls = _rule_evaluator(thresholds, lattice, 963, trues, dips={6: (0.05, 0.1)})
    result = search_thresholds(trues, np.array([963]), [SeriesRange(lo, hi)], 1, grid, steps, evaluate)
    assert calls[0] == 7 + 7 * grid and len(calls) == 1 + steps  # clean and grid points together, then each step
    reason = result.reason[:, 0, 0]
    assert (reason[:, 0] == reason[:, 1]).all()  # target and flip coincide under this rule
    assert reason[0, 0] == AT_MIN and reason[5, 0] == NOT_REACHED
    for i in (1, 2, 3, 4, 6):
        assert reason[i, 0] == FOUND
        j_lo, j_hi = result.j_lo[i, 0, 0, 0], result.j_hi[i, 0, 0, 0]
        assert j_hi - j_lo == 1 and lattice[j_lo] < thresholds[i] <= lattice[j_hi]
    # Image 6 changes at 0.02 and changes back between 0.05 and 0.1, where a grid point (0.089) sees it:
    # non-monotone, and the first change is still the one bisected.
    grid_points = lattice[:: 2 ** steps]
    assert ((grid_points >= 0.05) & (grid_points < 0.1)).any()
    assert result.non_monotone[6, 0, 0].all() and not result.non_monotone[:6].any()
    # Each bisection pass evaluates one canvas per pair still searching (target and flip share it).
    assert calls[1:] == [5] * steps


def test_the_search_skips_pairs_it_does_not_apply_to() -> None:
    lattice = get_lattice_fraction(0.01, 0.2, 4, np.arange(5))
    trues = np.array([963, 1, 2])

    def evaluate(image, series, j):
        pred = np.where(series == CLEAN, np.array([963, 1, 5])[image], 7)
        return pred[:, None], np.where(series == CLEAN, 0.0, lattice[np.maximum(j, 0)])

    result = search_thresholds(trues, np.array([963, 7]), [SeriesRange(0.01, 0.2), SeriesRange(None, None)], 1, 5, 0,
                               evaluate)
    r = result.reason[:, :, 0, :]
    assert r[0, 0, 0] == CLEAN_IS_TARGET and r[2, 0, 1] == CLEAN_WRONG and (r[:, 1] == UNREACHABLE).all()
    assert r[1, 0, 1] == AT_MIN and r[0, 0, 1] == AT_MIN  # prediction 7 at once: off the true class
    assert r[1, 0, 0] == NOT_REACHED  # never 963


# ---------------------------------------------------------------------------------------------------------
# (a) A model whose decision flips exactly when the measured cover passes a known per-image threshold.

@pytest.fixture()
def cover(monkeypatch):
    monkeypatch.setitem(registry._BACKENDS, "cover", "cover_backend:CoverBackend")
    registry.get_backend.cache_clear()
    yield
    registry.get_backend.cache_clear()


def test_the_search_recovers_known_thresholds_within_one_bisection_step(tmp_path, cover, cache_dir) -> None:
    thresholds = [0.001, 0.004, 0.007, 0.011, 0.019, 0.032, 0.047, 0.066, 0.09, 0.13, 0.17, 0.2, 0.255]
    classes = [1, 2, 3, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14]
    data = cover_backend.make_cover_images(tmp_path / "cover", thresholds, classes)
    templates = tmp_path / "templates.yaml"
    templates.write_text("- '{}'\n")
    out = tmp_path / "run"
    result = runner.invoke(app, ["threshold", "--backend", "cover", "--model", cover_backend.NAME, "--data", str(data),
                                 "--vocab", str(_vocab(tmp_path / "v.yaml", ("pizza", "pizza"))), "--placement",
                                 "center", "--templates", str(templates), "--device", "cpu", "--workers", "0",
                                 "--steps", "6", "--cache-dir", str(cache_dir), "--out", str(out)])
    assert result.exit_code == 0, result.output
    records = pd.read_parquet(out / "records.parquet").set_index("image_id").sort_index()
    assert len(records) == len(thresholds)
    truth = pd.Series(thresholds, index=[f"cover{k:03d}.png" for k in range(len(thresholds))])
    lo, hi = records["range_lo"].iloc[0], records["range_hi"].iloc[0]
    step = (hi / lo) ** (1 / (4 * 2 ** 6))
    for image_id, t in truth.items():
        r = records.loc[image_id]
        assert r["clean_pred"] == r["true_index"] != cover_backend.TARGET
        for o in ("target", "flip"):  # the prediction leaves the true class exactly when it becomes pizza
            assert r[f"{o}_reason"] == r["target_reason"] and r[f"f_{o}"] == r["f_target"] or np.isnan(r["f_target"])
        if r["target_reason"] == REASONS[AT_MIN]:
            assert r["target_cover"] >= t and r["f_target"] == lo
        elif r["target_reason"] == REASONS[NOT_REACHED]:
            assert r["target_cover_lo"] < t and r["target_lo"] == hi
        else:
            assert r["target_reason"] == REASONS[FOUND], (image_id, r["target_reason"])
            # The bracket is one lattice step (the last bisection step), and the known threshold lies in it.
            assert r["target_hi"] / r["target_lo"] == pytest.approx(step, rel=1e-9)
            assert r["target_cover_lo"] < t <= r["target_cover"]
            assert r["target_pred_lo"] == r["true_index"] and r["target_pred_hi"] == cover_backend.TARGET
            # In fractions: within one step, and the solver's tolerance (coverage within 4% of the fraction).
            assert abs(math.log(r["f_target"] / t)) <= math.log(step) + math.log(1.06)
    reasons = records["target_reason"].tolist()
    assert reasons[0] == "at_min" and reasons[-1] == "not_reached" and reasons.count("found") == len(thresholds) - 2
    assert not records["target_non_monotone"].any()


# ---------------------------------------------------------------------------------------------------------
# (b) The prediction at each recorded bracket is eval's at that fraction.

def test_each_bracket_matches_eval_at_its_fractions_on_the_demo_model(tmp_path, cache_dir) -> None:
    vocab = _vocab(tmp_path / "two.yaml", ("pizza", "pizza"), ("iPod", "iPod"))
    out = tmp_path / "threshold"
    common = [*DEMO, "--limit", "6", "--seed", "3", "--cache-dir", str(cache_dir)]
    result = runner.invoke(app, ["threshold", *common, "--vocab", str(vocab), "--placement", "paper8", "--placement",
                                 "random", "--grid", "4", "--steps", "3", "--out", str(out)])
    assert result.exit_code == 0, result.output
    records = pd.read_parquet(out / "records.parquet")
    checked = 0
    for (word, placement), rows in records.groupby(["word", "placement"]):
        expected = {}  # (image, fraction) -> prediction the search recorded there
        for o in ("target", "flip"):
            for r in rows[rows[f"{o}_reason"].isin(["found", "at_min"])].to_dict("records"):
                expected[r["image_id"], r[f"{o}_hi"]] = r[f"{o}_pred_hi"]
                expected[r["image_id"], r[f"{o}_lo"]] = r[f"{o}_pred_lo"]
                # The lower end does not change the outcome, the upper end does.
                if o == "target":
                    assert r["target_pred_lo"] != r["target_index"] and r["target_pred_hi"] == r["target_index"]
                else:
                    assert r["flip_pred_lo"] == r["true_index"] != r["flip_pred_hi"]
        fractions = sorted({f for _, f in expected if f > 0})
        if not fractions:
            continue
        one = _vocab(tmp_path / f"{word}.yaml", (word, word))
        ev = tmp_path / f"eval-{word}-{placement}"
        result = runner.invoke(app, ["eval", *common, "--vocab", str(one), "--placement", placement,
                                     *[a for f in fractions for a in ("--fraction", repr(float(f)))], "--out", str(ev)])
        assert result.exit_code == 0, result.output
        eval_records = pd.read_parquet(ev / "records.parquet")
        eval_pred = {(r["image_id"], r["fraction"]): r["pred_index"] for r in eval_records.to_dict("records")}
        for (image_id, fraction), pred in expected.items():
            assert eval_pred[image_id, fraction] == pred, (word, placement, image_id, fraction)
            checked += 1
    assert checked >= 10, checked


# ---------------------------------------------------------------------------------------------------------
# (c) The command end to end: tables, summary, resume, report.

def test_the_command_runs_resumes_and_reports(tmp_path, cache_dir) -> None:
    out = tmp_path / "run"
    args = ["threshold", *DEMO, "--limit", "8", "--chunk-size", "3", "--grid", "3", "--steps", "2",
            "--vocab", str(_vocab(tmp_path / "v.yaml", ("pizza", "pizza"), ("iPod", "iPod"))),
            "--cache-dir", str(cache_dir), "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "half of the" in text and "leave the true class" in text and "Non-monotone on the grid" in text
    info = read_run_info(out)
    assert info.complete and len(info.cells) == 3 and info.task == "threshold"
    records = pd.read_parquet(out / "records.parquet")
    assert list(records.columns) == list(THRESHOLD_COLUMNS) and len(records) == 8 * 2
    for name in (PER_WORD_CSV, LEADERBOARD_CSV, "threshold_curve.csv"):
        assert (out / name).is_file()
    per_word = pd.read_csv(out / PER_WORD_CSV)
    assert per_word["word"].tolist() == ["iPod", "pizza"] and (per_word["n_pairs"] == 8).all()
    again = runner.invoke(app, args)
    assert again.exit_code == 0, again.output
    assert "every cell (3) already done" in again.output
    assert pd.read_csv(out / PER_WORD_CSV).equals(per_word)
    report = runner.invoke(app, ["report", str(out), "--out", str(tmp_path / "report")])
    assert report.exit_code == 0, report.output
    page = (tmp_path / "report" / "report.md").read_text()
    assert "half of the" in page and "Non-monotone" in page and "threshold_curve.png" in page


def test_the_config_reads_an_eval_config_without_its_fractions_and_checks_the_range() -> None:
    cfg = load_threshold_config("ci", {"limit": 5})
    assert cfg.placements == (Placement.PAPER8, Placement.RANDOM) and cfg.fractions == (0.002, 0.25)
    assert cfg.n_intervals == 4 * 256
    with pytest.raises(ConfigError, match="below --max-fraction"):
        load_threshold_config(None, {"data": "sample", "min_fraction": 0.3, "max_fraction": 0.2})
    with pytest.raises(ConfigError, match="--grid"):
        load_threshold_config(None, {"data": "sample", "grid": 1})
    # An eval config's fractions are dropped (the search picks its own): `fractions` is the searched range.
    assert load_threshold_config(None, {"data": "sample", "fraction": [0.1], "max_fraction": 0.2}).fractions == (0.002,
                                                                                                               0.2)


# ---------------------------------------------------------------------------------------------------------
# The tables: queries equal the pandas reference; compositing equals eval's.

def _random_records(rng: np.random.Generator, n_images: int, models: int, defences: int, words: int) -> pd.DataFrame:
    lattice = get_lattice_fraction(0.005, 0.25, 16, np.arange(17))
    reasons = np.array(REASONS, dtype=object)
    rows = []
    for m in range(models):
        for d in range(defences):
            for i in range(n_images):
                for w in range(words):
                    row = {"image_id": f"img{i}", "true_index": i % 5, "model": f"m{m}", "pretrained": "" if m else "p",
                           "defence": ["none", "heads:0.1"][d], "word": ["pizza", "iPod", "$$$"][w],
                           "target_index": [963, 605, 719][w], "placement": "paper8", "font": "DejaVuSans-Bold.ttf",
                           "fill": "#ffffff", "outline": "#000000", "outline_width": 1, "opacity": 1.0,
                           "range_lo": 0.005, "range_hi": 0.25, "clean_pred": i % 5}
                    for o in ("target", "flip"):
                        reason = int(rng.choice(6, p=[0.5, 0.1, 0.2, 0.1, 0.05, 0.05]))
                        j = int(rng.integers(1, 17))
                        f = lattice[j] if reason == FOUND else 0.005 if reason == AT_MIN else np.nan
                        row.update({f"f_{o}": f, f"{o}_reason": reasons[reason], f"{o}_lo": lattice[j - 1],
                                    f"{o}_hi": f, f"{o}_pred_lo": 1, f"{o}_pred_hi": 2, f"{o}_cover_lo": 0.0,
                                    f"{o}_cover": f, f"{o}_non_monotone": bool(rng.random() < 0.1)})
                    rows.append(row)
    return pd.DataFrame(rows)[list(THRESHOLD_COLUMNS)].astype(THRESHOLD_COLUMNS)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2 ** 16), n_images=st.integers(1, 30), models=st.integers(1, 2),
       defences=st.integers(1, 2), words=st.integers(1, 3), chunks=st.integers(1, 4))
def test_the_table_queries_equal_the_pandas_reference(tmp_path, seed, n_images, models, defences, words, chunks) -> None:
    records = _random_records(np.random.default_rng(seed), n_images, models, defences, words)
    folder = tmp_path / f"records-{seed}-{n_images}-{models}-{defences}-{words}-{chunks}.parquet"
    folder.mkdir()
    for k, part in enumerate(np.array_split(np.arange(len(records)), chunks)):
        records.iloc[part].to_parquet(folder / f"{k:05d}.parquet", index=False)
    with open_records(folder) as view:
        per_word, leaderboard = query_per_word_threshold(view), query_leaderboard(view)
    pd.testing.assert_frame_equal(per_word.reset_index(drop=True), build_per_word_threshold_reference(records),
                                  check_dtype=False)
    pd.testing.assert_frame_equal(leaderboard.reset_index(drop=True), build_leaderboard_reference(records),
                                  check_dtype=False)


@pytest.mark.parametrize("placement", list(Placement))
@pytest.mark.parametrize("style", [RenderStyle(), RenderStyle(fill=(255, 0, 0), outline_width=0, opacity=0.5)],
                         ids=["default", "no-outline-half-opacity"])
def test_one_blend_per_batch_equals_eval_compositing(placement, style) -> None:
    rng = np.random.default_rng(0)
    masks = [create_attack_mask(w, f, placement, style, (96, 96)) for w, f in (("pizza", 0.07), ("iPod", 0.12))]
    ids = [f"img{i}" for i in range(4)]
    for dtype in (torch.float32, torch.uint8):
        x = torch.from_numpy(rng.integers(0, 256, (4, 96, 96, 3)).astype(np.uint8)).to(dtype)
        expected, mine = x.clone(), x.clone()
        changed = []
        for i in range(4):  # canvas i gets mask i % 2
            m = masks[i % 2]
            off = get_offsets(m, ids[i:i + 1], 7)
            changed.append(int(composite_batch(expected[i:i + 1], upload_mask(m, torch.device("cpu")), off)[0]))
        offsets = [None if placement is not Placement.RANDOM else get_offsets(masks[i % 2], ids[i:i + 1], 7)[0]
                   for i in range(4)]
        got = composite_jobs(mine, [MaskPixels.of(masks[i % 2]) for i in range(4)], offsets)
        assert torch.equal(expected, mine) and got.tolist() == changed


def test_pass_masks_come_in_order_block_by_block_and_an_unhittable_fraction_at_the_nearest(tmp_path,
                                                                                           monkeypatch) -> None:
    from typoattack.attack import masks as masks_module
    from typoattack.attack.masks import MaskPool, MaskRequest
    from typoattack.attack.solver import UnreachableFractionError
    from typoattack.tasks.threshold.masks import iter_masks

    solve = masks_module._solve

    def coverage_jumps_over_0_04(request):
        if request.fraction == 0.04:
            raise UnreachableFractionError("no size hits it", 0.04, "nearest", 0.0413)
        return solve(request)

    monkeypatch.setattr(masks_module, "_solve", coverage_jumps_over_0_04)
    requested = (0.02, 0.03, 0.04, 0.05, 0.06)
    requests = [MaskRequest("pizza", f, Placement.PAPER8, RenderStyle(), (128, 128)) for f in requested]
    with MaskPool(0) as pool:
        got = list(iter_masks(requests, str(tmp_path), pool, block=2))
    assert [m.fraction for m in got] == [0.02, 0.03, 0.0413, 0.05, 0.06]
    for m in got:
        expected = create_attack_mask("pizza", m.fraction, Placement.PAPER8, RenderStyle(), (128, 128))
        assert (m.font_size, m.coverage, m.phases) == (expected.font_size, expected.coverage, expected.phases)
        np.testing.assert_array_equal(m.layers.outline_alpha, expected.layers.outline_alpha)
    assert len(list((tmp_path / "masks").glob("*.npz"))) == 5


def test_the_run_json_states_the_search(tmp_path, cache_dir) -> None:
    out = tmp_path / "run"
    result = runner.invoke(app, ["threshold", *DEMO, "--limit", "2", "--grid", "2", "--steps", "1", "--vocab",
                                 str(_vocab(tmp_path / "v.yaml", ("pizza", "pizza"))), "--cache-dir", str(cache_dir),
                                 "--out", str(out)])
    assert result.exit_code == 0, result.output
    doc = json.loads((out / "run.json").read_text())
    assert doc["search"]["lattice_intervals"] == 2 and doc["models"][0]["ranges"][0]["word"] == "pizza"
    assert 0.004 < doc["models"][0]["ranges"][0]["lo"] < 0.006  # paper8 cannot go below ~0.005 at 224 px
