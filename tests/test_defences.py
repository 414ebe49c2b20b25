"""Defences: head ablation against a hand-computed reference, Defense-Prefix prompt embeddings,
defence values and their errors, and runs with `--defence` (none reproduces a plain run)."""

from __future__ import annotations

import json
from pathlib import Path

import open_clip
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from typoattack.cli import app
from typoattack.tasks.synthetic.config import load_synthetic_config
from typoattack.backends.open_clip.heads import ablate_heads, get_head_grid
from typoattack.backends.open_clip.prefix import embed_prompts, encode_text_embeddings, get_star_token
from typoattack.config.defences import DefenceKind, parse_defence, parse_defences
from typoattack.defences.prefix import PREFIX_PROMPT, load_prefix
from typoattack.errors import ConfigError
from runs import run_report

runner = CliRunner()
TABLES = ["per_word.csv", "per_word.md", "confusion.csv"]


def _reference_block(block: torch.nn.Module, x: torch.Tensor, zeroed: list[int]) -> torch.Tensor:
    """A ResidualAttentionBlock computed by hand from its weights, with the class-token (position 0)
    output of the `zeroed` heads set to zero before the out-projection. x: [B, L, D] (batch first)."""
    mha = block.attn
    b, n, d = x.shape
    h = mha.num_heads
    y = block.ln_1(x)
    w_q, w_k, w_v = mha.in_proj_weight.chunk(3)
    b_q, b_k, b_v = mha.in_proj_bias.chunk(3)
    heads = []
    for i in range(h):
        s = slice(i * d // h, (i + 1) * d // h)
        q = y @ w_q[s].T + b_q[s]
        k = y @ w_k[s].T + b_k[s]
        v = y @ w_v[s].T + b_v[s]
        a = torch.softmax(q @ k.transpose(1, 2) / (d // h) ** 0.5, dim=-1)
        out = a @ v  # [B, L, d_head]
        if i in zeroed:
            out = out.clone()
            out[:, 0] = 0
        heads.append(out)
    attn = torch.cat(heads, dim=-1) @ mha.out_proj.weight.T + mha.out_proj.bias
    x = x + block.ls_1(attn)
    return x + block.ls_2(block.mlp(block.ln_2(x)))


def test_heads_zero_exactly_the_named_heads_class_token_output(tiny_model) -> None:
    model = tiny_model.model
    assert get_head_grid(model) == (2, 2)
    block = model.visual.transformer.resblocks[1]
    assert block.attn.batch_first
    x = torch.randn(3, 50, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        plain = block(x)
        assert torch.allclose(plain, _reference_block(block, x, []), atol=1e-5)  # the reference is right
        with ablate_heads(model, [(1, 0)]):
            ablated = block(x)
        assert torch.allclose(ablated, _reference_block(block, x, [0]), atol=1e-5)
        # Only the class token changes (the MLP is per token), and the other head's share is intact.
        assert torch.equal(ablated[:, 1:], plain[:, 1:]) or torch.allclose(ablated[:, 1:], plain[:, 1:], atol=1e-6)
        assert not torch.allclose(ablated[:, 0], plain[:, 0], atol=1e-4)
        assert not torch.allclose(ablated[:, 0], _reference_block(block, x, [1])[:, 0], atol=1e-4)
        with ablate_heads(model, [(1, 0), (1, 1)]):
            both = block(x)
        assert torch.allclose(both, _reference_block(block, x, [0, 1]), atol=1e-5)
    # Layer 0 is untouched by heads of layer 1, and the original modules come back.
    assert isinstance(block.attn, torch.nn.MultiheadAttention)
    assert isinstance(model.visual.transformer.resblocks[0].attn, torch.nn.MultiheadAttention)


def test_heads_change_image_features_only_when_ablating(tiny_model) -> None:
    img = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        plain = tiny_model.encode_image(img)
        with ablate_heads(tiny_model.model, []):
            same = tiny_model.encode_image(img)
        with ablate_heads(tiny_model.model, [(0, 1)]):
            ablated = tiny_model.encode_image(img)
    assert torch.allclose(plain, same, atol=1e-6)
    assert not torch.allclose(plain, ablated, atol=1e-4)


def test_heads_on_a_resnet_or_out_of_range_is_a_config_error(tiny_model) -> None:
    rn = open_clip.CLIP(embed_dim=32, vision_cfg={"image_size": 64, "layers": [1, 1, 1, 1], "width": 8,
                                                  "head_width": 8},
                        text_cfg={"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1})
    with pytest.raises(ConfigError, match="ModifiedResNet"):
        with ablate_heads(rn, [(0, 0)]):
            pass
    with pytest.raises(ConfigError, match="head 2.0 does not exist.*layers 0-1 with heads 0-1"):
        with ablate_heads(tiny_model.model, [(2, 0)]):
            pass


def test_prefix_changes_only_the_marked_position(tiny_model) -> None:
    prompts = [PREFIX_PROMPT.format(c) for c in ("tench", "goldfish", "great white shark")]
    vector = torch.randn(64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        tokens, plain = embed_prompts(tiny_model, prompts, None)
        _, changed = embed_prompts(tiny_model, prompts, vector)
    marked = tokens == get_star_token(tiny_model.tokenizer)
    assert marked.sum(1).tolist() == [1, 1, 1]
    assert torch.equal(changed[~marked], plain[~marked])
    assert torch.equal(changed[marked], vector.expand(3, 64))


def test_prefix_equal_to_the_star_embedding_gives_the_plain_prompt_features(tiny_model) -> None:
    model = tiny_model.model
    prompts = [PREFIX_PROMPT.format(c) for c in ("tench", "volcano")]
    star = model.token_embedding.weight[get_star_token(tiny_model.tokenizer)].detach().clone()
    with torch.no_grad():
        tokens, embeds = embed_prompts(tiny_model, prompts, star)
        ours = encode_text_embeddings(model, tokens, embeds)
        reference = model.encode_text(tiny_model.tokenizer(prompts), normalize=True)
        # A random vector (a constant shift would vanish in the first LayerNorm).
        moved = star + torch.randn(64, generator=torch.Generator().manual_seed(4))
        other = encode_text_embeddings(model, tokens, embed_prompts(tiny_model, prompts, moved)[1])
    assert torch.allclose(ours, reference, atol=1e-6)
    assert not torch.allclose(other, reference, atol=1e-3)


def test_prefix_file_shapes_and_width(tmp_path) -> None:
    for name, value in (("flat.pt", torch.ones(64)), ("row.pt", torch.ones(1, 64))):
        torch.save(value, tmp_path / name)
        assert load_prefix(tmp_path / name, 64).shape == (64,)
    torch.save(torch.ones(512), tmp_path / "wide.pt")
    with pytest.raises(ConfigError, match="D=512.*width 64"):
        load_prefix(tmp_path / "wide.pt", 64)
    torch.save(torch.ones(2, 64), tmp_path / "two.pt")
    with pytest.raises(ConfigError, match=r"shape \(D,\) or \(1, D\), got \(2, 64\)"):
        load_prefix(tmp_path / "two.pt", 64)
    (tmp_path / "junk.pt").write_text("not a tensor")
    with pytest.raises(ConfigError, match="not a torch.save'd tensor"):
        load_prefix(tmp_path / "junk.pt", 64)


def test_defence_values(tmp_path) -> None:
    assert parse_defence("none").kind is DefenceKind.NONE
    heads = parse_defence("heads: 3.1, 0.2,3.1")
    assert heads.heads == ((0, 2), (3, 1)) and heads.text == "heads:0.2,3.1" and heads.image_side
    (tmp_path / "h.yaml").write_text("heads: ['1.0', [0, 1]]\nsteps: []\n")
    assert parse_defence("heads:@h.yaml", base=tmp_path).heads == ((0, 1), (1, 0))
    torch.save(torch.ones(64), tmp_path / "p.pt")
    prefix = parse_defence(f"prefix:{tmp_path / 'p.pt'}")
    assert prefix.label == "prefix:p.pt" and not prefix.image_side
    assert parse_defence("templates:simple").label == "templates:simple"
    for bad, message in (("heads:1.x", "'1.x' is not a head"), ("heads:", "needs a value"),
                         ("blur:3", "is not a defence"), ("prefix:missing.pt", "does not exist"),
                         ("heads:@missing.yaml", "does not exist"), ("templates:fancy", "does not exist")):
        with pytest.raises(ConfigError, match=message):
            parse_defence(bad, base=tmp_path)
    with pytest.raises(ConfigError, match="twice"):
        parse_defences(["none", "NONE"])


def _tiny_eval_args(sample_dir: Path, cache_dir: Path, out: Path, vocab: Path) -> list[str]:
    return ["eval", "--model", "typoattack-tiny", "--pretrained", "seed:0", "--data", str(sample_dir),
            "--limit", "4", "--vocab", str(vocab), "--fraction", "0.1", "--templates", "simple", "--device", "cpu",
            "--workers", "0", "--cache-dir", str(cache_dir), "--out", str(out), "--chunk-size", "3"]


@pytest.fixture
def vocab(tmp_path) -> Path:
    path = tmp_path / "vocab.yaml"
    path.write_text("words:\n  - {text: pizza, target: pizza}\n  - {text: iPod, target: iPod}\n")
    return path


def test_defence_none_reproduces_a_run_without_defence_byte_for_byte(tmp_path, sample_dir, cache_dir, vocab) -> None:
    plain, none = tmp_path / "plain", tmp_path / "none"
    assert runner.invoke(app, _tiny_eval_args(sample_dir, cache_dir, plain, vocab)).exit_code == 0
    result = runner.invoke(app, [*_tiny_eval_args(sample_dir, cache_dir, none, vocab), "--defence", "none"])
    assert result.exit_code == 0, result.output
    for name in TABLES:
        assert (plain / name).read_bytes() == (none / name).read_bytes(), name
    records = pd.read_parquet(plain / "records.parquet")
    pd.testing.assert_frame_equal(records, pd.read_parquet(none / "records.parquet"))
    assert list(records["defence"].unique()) == ["none"]


def test_several_defences_share_images_and_keep_the_undefended_numbers(tmp_path, sample_dir, cache_dir, vocab,
                                                                       monkeypatch) -> None:
    import typoattack.backends.base as base

    torch.save(torch.randn(64, generator=torch.Generator().manual_seed(3)), tmp_path / "prefix.pt")
    calls: list[tuple[int, bool]] = []
    encode = base.encode_features

    def counting(model, x):
        ablated = any(type(b.attn).__name__ == "HeadAblatedAttention" for b in model.model.visual.transformer.resblocks)
        calls.append((len(x), ablated))
        return encode(model, x)

    plain = tmp_path / "plain"
    assert runner.invoke(app, _tiny_eval_args(sample_dir, cache_dir, plain, vocab)).exit_code == 0
    monkeypatch.setattr(base, "encode_features", counting)
    out = tmp_path / "many"
    result = runner.invoke(app, [*_tiny_eval_args(sample_dir, cache_dir, out, vocab), "--defence", "none",
                                 "--defence", "heads:1.0,1.1", "--defence", f"prefix:{tmp_path / 'prefix.pt'}",
                                 "--defence", "templates:openai"])
    assert result.exit_code == 0, result.output
    # Cells of 3 and 1 images x 3 jobs: per batch one pass for the three text-side defences, one with
    # the heads ablated.
    assert sorted(calls) == [(3, False), (3, True), (9, False), (9, True)]
    records = pd.read_parquet(out / "records.parquet")
    # The prefix's baseline, its own prompt without the token, is evaluated too (added by the config).
    assert records.groupby("defence").size().to_dict() == {
        "none": 12, "heads:1.0,1.1": 12, "prefix:prefix.pt": 12, "templates:openai": 12, "templates:photo": 12}
    base_records = pd.read_parquet(plain / "records.parquet")
    undefended = records[records["defence"] == "none"].reset_index(drop=True)
    pd.testing.assert_frame_equal(undefended, base_records)
    heads = records[records["defence"] == "heads:1.0,1.1"].reset_index(drop=True)
    assert (heads["pixel_cover"] == base_records["pixel_cover"]).all()  # the same attacked canvases
    assert (heads["pred_index"] != base_records["pred_index"]).any()
    per_word = pd.read_csv(out / "per_word.csv")
    assert sorted(per_word["defence"].unique()) == sorted(records["defence"].unique())
    info = json.loads((out / "run.json").read_text())
    assert info["config"]["defences"][1] == "heads:1.0,1.1"

    _, report = run_report([out])
    md = (report / "report.md").read_text()
    table = md[md.index("## Defences"):md.index("## Figures")]
    none_row = next(line for line in table.splitlines() if "| none |" in line)
    assert "+0.0 pt" in none_row and "| heads:1.0,1.1 | none |" in table and "| templates:openai | none |" in table
    assert "| prefix:prefix.pt | templates:photo |" in table
    assert (report / "asr_vs_fraction_heads_1.0_1.1.png").is_file() and (report / "asr_vs_fraction_none.png").is_file()
    # The leaderboard ranks by accuracy under attack and shows each defence's clean cost against `none`.
    board = pd.read_csv(report / "leaderboard.csv")
    assert board["attacked_top1"].is_monotonic_decreasing and len(board) == 5
    none_clean = board.loc[board["defence"] == "none", "clean_top1"].item()
    assert (board["clean_top1_vs_none"] - (board["clean_top1"] - none_clean)).abs().max() < 1e-6
    lead = md[md.index("## Leaderboard"):md.index("**Contents:**")]
    assert "| Δ clean vs none |" in lead and lead.count("| heads:1.0,1.1 |") == 1
    # The top confusions: the report shows the undefended rows, the CSV every defence.
    confusions = md[md.index("## Top confusions"):md.index("## Per-word results")]
    assert "Defence none only." in confusions and "heads:1.0,1.1" not in confusions
    top = pd.read_csv(report / "top_confusions.csv", keep_default_na=False)
    assert set(top["defence"]) <= set(records["defence"]) and top["defence"].nunique() > 1
    _, single = run_report([plain])
    assert "## Defences" not in (single / "report.md").read_text()


def test_yaml_defences_resolve_files_next_to_the_config(tmp_path, sample_dir) -> None:
    torch.save(torch.ones(64), tmp_path / "p.pt")
    (tmp_path / "h.yaml").write_text("- '0.1'\n")
    (tmp_path / "bad.yaml").write_text("- 1.10\n")
    with pytest.raises(ConfigError, match="in quotes"):
        load_synthetic_config(None, {"model": "typoattack-tiny", "data": str(sample_dir), "defences": ["heads:@" + str(tmp_path / "bad.yaml")]})
    config = tmp_path / "run.yaml"
    config.write_text(f"model: typoattack-tiny\npretrained: 'seed:0'\ndata: {sample_dir}\n"
                      "defences: [none, 'heads:@h.yaml', 'prefix:p.pt']\n")
    cfg = load_synthetic_config(config)
    # The prefix's baseline (its own single prompt without the token) comes along.
    assert cfg.defences == ("none", "heads:0.1", f"prefix:{(tmp_path / 'p.pt').resolve()}", "templates:photo")
    assert load_synthetic_config(config, {"defences": ["templates:simple"]}).defences == ("templates:simple",)


@pytest.mark.parametrize("defence, message", [
    ("heads:9.9", "head 9.9 does not exist"),
    ("heads:one", "'one' is not a head"),
    ("shield", "is not a defence"),
])
def test_cli_bad_defence_is_one_red_line(tmp_path, sample_dir, cache_dir, vocab, defence, message) -> None:
    result = runner.invoke(app, [*_tiny_eval_args(sample_dir, cache_dir, tmp_path / "o", vocab), "--defence", defence])
    assert result.exit_code == 1
    assert message in result.output and "Traceback" not in result.output


def test_cli_heads_on_a_resnet_is_one_red_line(tmp_path, sample_dir, cache_dir, vocab) -> None:
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "typoattack-test-rn.json").write_text(json.dumps({
        "embed_dim": 32, "vision_cfg": {"image_size": 64, "layers": [1, 1, 1, 1], "width": 8, "head_width": 8},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}))
    open_clip.add_model_config(tmp_path / "configs")
    args = _tiny_eval_args(sample_dir, cache_dir, tmp_path / "o", vocab)
    args[args.index("typoattack-tiny")] = "typoattack-test-rn"
    result = runner.invoke(app, [*args, "--defence", "heads:0.0"])
    assert result.exit_code == 1, result.output
    assert "ModifiedResNet" in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("content, message", [
    (b"heads: ['1.0',\n  [0, 1\n", r"heads file .*bad.yaml is not valid YAML at line \d+"),
    (b"heads: ['1.\xff']\n", r"heads file .*bad.yaml is not UTF-8 text"),
])
def test_a_broken_heads_file_is_one_line_naming_it(tmp_path, content, message) -> None:
    (tmp_path / "bad.yaml").write_bytes(content)
    with pytest.raises(ConfigError, match=message) as caught:
        parse_defence("heads:@bad.yaml", base=tmp_path)
    assert "\n" not in str(caught.value)
