"""find-heads: the seeded split, the greedy rule, text-attention scores, and that no reported
number comes from the images the heads were selected on."""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

import typoattack.tasks.synthetic.evaluate
import typoattack.tasks.synthetic.find_heads
from typoattack.cli import app
from typoattack.defences.find_heads import MAX_REJECTED, Accuracy, search_heads, split_images
from typoattack.errors import DataError

runner = CliRunner()


def test_split_is_seeded_disjoint_and_complete() -> None:
    rows = np.arange(3, 40)
    sel, held = split_images(rows, 0)
    assert not set(sel) & set(held) and sorted([*sel, *held]) == list(rows)
    assert abs(len(sel) - len(held)) <= 1
    again, _ = split_images(rows, 0)
    other, _ = split_images(rows, 1)
    assert np.array_equal(sel, again) and not np.array_equal(sel, other)
    with pytest.raises(DataError, match="at least 2 images"):
        split_images(np.arange(1), 0)


def _fake(gain: dict, clean_cost: dict, heldout_value: float = 0.5):
    """evaluate(half, heads): typographic accuracy 0.2 + sum of the heads' gains, clean 0.8 - costs."""
    calls: list[tuple[str, tuple]] = []

    def evaluate(half, heads):
        calls.append((half, tuple(heads)))
        if half == "heldout":
            return Accuracy(heldout_value, heldout_value)
        return Accuracy(0.8 - sum(clean_cost.get(h, 0) for h in heads), 0.2 + sum(gain.get(h, 0) for h in heads))
    return evaluate, calls


def test_greedy_keeps_gaining_heads_in_score_order_and_stops_on_clean_drop() -> None:
    scores = np.array([[0.9, 0.1], [0.5, 0.7]])  # order: 0.0, 1.1, 1.0, 0.1
    evaluate, calls = _fake({(0, 0): 0.05, (1, 1): 0.0005, (1, 0): 0.02, (0, 1): 0.1},
                            {(1, 0): 0.02})
    search = search_heads(scores, evaluate)
    # 1.1 gains less than 0.001 (rejected); 1.0 gains but drops clean by 0.02: kept, then stop.
    assert search.heads == [(0, 0), (1, 0)]
    assert [h for h, _, kept in search.tried] == [(0, 0), (1, 1), (1, 0)]
    assert "dropped 0.0200" in search.stopped
    assert [s.attacked_top1 for _, s, _ in search.steps] == pytest.approx([0.25, 0.27])
    # Held-out accuracy is measured for the baseline and each kept step, never for rejected heads.
    assert [c for c in calls if c[0] == "heldout"] == [("heldout", ()), ("heldout", ((0, 0),)),
                                                       ("heldout", ((0, 0), (1, 0)))]


def test_greedy_stops_after_too_many_rejections_and_ignores_heldout() -> None:
    scores = np.arange(16, dtype=float).reshape(4, 4)[::-1, ::-1].copy()  # 0.0 first ... 3.3 last
    gains = {(3, 3): 0.5}  # the last head would help, but the search gives up before it
    first, _ = _fake(gains, {}, heldout_value=0.1)
    second, _ = _fake(gains, {}, heldout_value=0.9)
    a, b = search_heads(scores, first), search_heads(scores, second)
    assert a.heads == b.heads == []
    assert len(a.tried) == MAX_REJECTED + 1 and "rejected" in a.stopped


def test_find_heads_never_reports_on_selection_images(tmp_path, sample_dir, cache_dir, monkeypatch) -> None:
    scored: list[set] = []
    evaluated: list[tuple[frozenset, tuple]] = []
    real_score = typoattack.tasks.synthetic.find_heads.score_heads
    real_eval = typoattack.tasks.synthetic.evaluate.evaluate_shard

    def score(loaded, canvases, rows, *args):
        scored.append({canvases.items[int(r)].image_id for r in rows})
        return real_score(loaded, canvases, rows, *args)

    def shard(loaded, encoder, canvases, rows, *args):
        evaluated.append((frozenset(canvases.items[int(r)].image_id for r in rows),
                          encoder.defences.variants[0].heads))
        return real_eval(loaded, encoder, canvases, rows, *args)

    monkeypatch.setattr(typoattack.tasks.synthetic.find_heads, "score_heads", score)
    monkeypatch.setattr(typoattack.tasks.synthetic.evaluate, "evaluate_shard", shard)
    vocab = tmp_path / "vocab.yaml"
    vocab.write_text("words:\n  - {text: pizza, target: pizza}\n")
    out = tmp_path / "heads.yaml"
    result = runner.invoke(app, ["find-heads", "--out", str(out), "--model", "typoattack-tiny", "--pretrained",
                                 "seed:0", "--data", str(sample_dir), "--limit", "8", "--vocab", str(vocab),
                                 "--fraction", "0.1", "--templates", "simple", "--device", "cpu", "--workers", "0",
                                 "--cache-dir", str(cache_dir)])
    assert result.exit_code == 0, result.output
    doc = yaml.safe_load(out.read_text())
    heldout = set(doc["heldout_images"])
    (selection,) = scored
    assert len(selection) == len(heldout) == 4 and not selection & heldout
    # Baseline on each half first; every evaluation sees one half only.
    assert evaluated[0] == (frozenset(selection), ()) and evaluated[1] == (frozenset(heldout), ())
    assert all(ids in (frozenset(selection), frozenset(heldout)) for ids, _ in evaluated)
    # The held-out numbers in heads.yaml are the held-out evaluations of the kept sets.
    kept_sets = [tuple(tuple(int(v) for v in h.split(".")) for h in s["heads"]) for s in doc["steps"]]
    assert [heads for ids, heads in evaluated if ids == frozenset(heldout)] == [(), *kept_sets]
    assert doc["n_selection"] == 4 and doc["n_heldout"] == 4 and len(doc["scores"]) == 4
    assert all(0 <= v <= 1 for v in doc["scores"].values()) and max(doc["scores"].values()) > 0
    assert doc["heads"] == (doc["steps"][-1]["heads"] if doc["steps"] else [])


def test_find_heads_on_a_resnet_is_one_red_line(tmp_path, sample_dir) -> None:
    import json

    import open_clip

    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "typoattack-test-rn2.json").write_text(json.dumps({
        "embed_dim": 32, "vision_cfg": {"image_size": 64, "layers": [1, 1, 1, 1], "width": 8, "head_width": 8},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}))
    open_clip.add_model_config(tmp_path / "configs")
    result = runner.invoke(app, ["find-heads", "--out", str(tmp_path / "h.yaml"), "--model", "typoattack-test-rn2",
                                 "--pretrained", "seed:0", "--data", str(sample_dir), "--limit", "2",
                                 "--device", "cpu", "--workers", "0", "--cache-dir", str(tmp_path / "c")])
    assert result.exit_code == 1 and "ModifiedResNet" in result.output and "Traceback" not in result.output
