"""Words in any language and fonts that can draw them: `--font auto` (and the default font's fallback), Babel-
ImageNet's names (`--vocab babel:LANG`), repeated `--vocab`, `--class-language`, and the table that puts a
target's words in several languages side by side.

The Hangul test words are drawn with tests/fonts/NotoSansCJKkr-Bold-subset.otf, reached through
TYPOATTACK_FONT_DIRS (CI machines have no CJK font); the fonts installed on this machine are hidden where a test
needs a word no font covers."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from typoattack.analysis.languages import PER_TARGET_LANGUAGE_CSV, build_per_target_language
from typoattack.attack.render import needs_complex_layout
from typoattack.attack.solver import create_attack_mask
from typoattack.cli import app
from typoattack.config.parsing import resolve_vocab_path
from typoattack.config.types import Placement, RenderStyle
from typoattack.constants import AUTO_FONT, DEFAULT_FONT
from typoattack.data import fonts
from typoattack.data.babel import get_class_language, get_language_templates, load_babel_vocab
from typoattack.data.class_sets import get_imagenet_class_set
from typoattack.data.vocab import load_attack_vocab
from typoattack.errors import ConfigError, RenderError
from typoattack.records import Condition, list_conditions
from typoattack.tasks.synthetic.config import load_synthetic_config

runner = CliRunner()
FONT_DIR = Path(__file__).parent / "fonts"
SUBSET = FONT_DIR / "NotoSansCJKkr-Bold-subset.otf"
DEMO = ["--model", "typoattack-reader-tiny", "--pretrained", "ci500", "--device", "cpu", "--workers", "0",
        "--data", "sample", "--templates", "photo"]
KOREAN = {"피자": 963, "쓰레기통": 412, "소총": 764, "백상아리": 2, "저금통": 719}
ENGLISH = {"pizza": 963, "trash": 412}


def _write_vocab(path: Path, words: dict[str, int], language: str | None = None) -> Path:
    lines = [f"name: {path.stem}", *([f"language: {language}"] if language else []), "words:"]
    lines += [f"  - {{text: {text}, target: {target}}}" for text, target in words.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def test_fonts(monkeypatch):
    """The shipped fonts and tests/fonts only: the fonts installed on this machine are hidden."""
    monkeypatch.setenv(fonts.FONT_DIRS_ENV, str(FONT_DIR))
    monkeypatch.setattr(fonts, "list_system_fonts", lambda: ((), "fontconfig"))
    fonts._find_font.cache_clear()
    yield
    fonts._find_font.cache_clear()


@pytest.fixture(scope="module")
def vocab_files(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("vocab")
    return _write_vocab(folder / "en2.yaml", ENGLISH), _write_vocab(folder / "ko5.yaml", KOREAN, "ko")


# --------------------------------------------------------------------------------------------
# Fonts


def test_the_test_font_has_exactly_the_korean_words_and_its_licence() -> None:
    cmap = fonts.get_codepoints(SUBSET)
    assert {ord(ch) for w in KOREAN for ch in w} <= cmap and SUBSET.stat().st_size < 100_000
    assert "SIL OPEN FONT LICENSE Version 1.1" in (FONT_DIR / "OFL.txt").read_text()
    assert "pyftsubset" in (FONT_DIR / "README.md").read_text()


def test_auto_searches_the_shipped_fonts_then_the_font_dirs(test_fonts) -> None:
    assert fonts.list_local_fonts()[0] == str(DEFAULT_FONT)
    assert fonts.find_font("pizza") == str(DEFAULT_FONT)  # the shipped default covers Latin: chosen first
    assert fonts.find_font("피자") == str(SUBSET)
    assert fonts.resolve_font("피자", AUTO_FONT) == str(SUBSET)
    assert fonts.resolve_font("피자", str(DEFAULT_FONT)) == str(SUBSET)  # the default falls back
    other = str(DEFAULT_FONT.with_name("DejaVuSans.ttf"))
    assert fonts.resolve_font("피자", other) == other  # a font the user named is kept (and fails where drawn)


def test_a_word_no_font_covers_is_one_line_naming_the_script(test_fonts, monkeypatch) -> None:
    monkeypatch.delenv(fonts.FONT_DIRS_ENV)
    with pytest.raises(RenderError) as e:
        fonts.find_font("피자")
    message = str(e.value)
    assert "\n" not in message and "피" in message and "(Hangul)" in message
    assert "apt install fonts-noto-cjk" in message and "--font PATH" in message and fonts.FONT_DIRS_ENV in message


def test_missing_font_through_the_cli_is_one_line(tmp_path) -> None:
    word = "\U0010fffd"  # private use, plane 16: no font draws it
    result = runner.invoke(app, ["render", word, "sample:tench", "--font", "auto", "-o", str(tmp_path / "a.png")])
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "no installed font covers" in lines[0] and "--font PATH" in lines[0]


def test_a_missing_font_dir_is_an_error(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv(fonts.FONT_DIRS_ENV, str(tmp_path / "nope"))
    with pytest.raises(ConfigError, match="not a folder"):
        fonts.get_font_dirs()


def test_fontconfig_charsets_and_the_search_order_of_installed_fonts() -> None:
    starts, ends = fonts._parse_charset("20-7e a0 ac00-d7a3")
    font = fonts.SystemFont("x.ttf", (0, 0), starts, ends)
    assert font.covers(ord("a")) and font.covers(0xA0) and font.covers(ord("피")) and not font.covers(0xA1)
    found, method = fonts.list_system_fonts()
    assert method in ("fontconfig", "matplotlib")
    assert list(found) == sorted(found, key=lambda f: (f.rank, f.path))


def test_hangul_masks_reach_the_fraction(test_fonts) -> None:
    style = RenderStyle(font=str(SUBSET))
    for word in KOREAN:
        for placement in Placement:
            mask = create_attack_mask(word, 0.07, placement, style, (224, 224))
            assert abs(mask.coverage - 0.07) <= 0.04 * 0.07, (word, placement)


def test_right_to_left_and_combining_marks_need_raqm_and_are_solved_with_it() -> None:
    assert needs_complex_layout("שלום") and needs_complex_layout("e\u0301") and not needs_complex_layout("피자")
    from PIL import features

    if not features.check("raqm"):
        pytest.skip("this Pillow has no raqm: such words are refused (check_glyphs)")
    for word in ("שלום", "مرحبا", "cafe\u0301"):  # DejaVu Sans Bold covers Hebrew and Arabic
        mask = create_attack_mask(word, 0.07, Placement.CENTER, RenderStyle(), (224, 224))
        assert abs(mask.coverage - 0.07) <= 0.04 * 0.07, word


def test_conditions_get_their_fonts_and_run_json_says_which(test_fonts, vocab_files) -> None:
    en, ko = vocab_files
    cfg = load_synthetic_config(None, {"data": "sample", "vocab": [str(en), str(ko)], "font": "auto"})
    vocab = load_attack_vocab(cfg.vocab, get_imagenet_class_set())
    conditions, info = fonts.resolve_fonts(list_conditions(cfg, vocab))
    by_word = {c.word: Path(c.style.font) for c in conditions}
    assert by_word["pizza"] == DEFAULT_FONT and by_word["피자"] == SUBSET
    assert {d["word"]: d["file"] for d in info["words"]} == {
        **{w: DEFAULT_FONT.name for w in ENGLISH}, **{w: SUBSET.name for w in KOREAN}}
    assert info["search"][1] == str(FONT_DIR.resolve())
    # The default style and words it draws: nothing to resolve, nothing in run.json (runs keep their records).
    default = load_synthetic_config(None, {"data": "sample"})
    plain = list_conditions(default, load_attack_vocab(default.vocab, get_imagenet_class_set()))
    assert fonts.resolve_fonts(plain) == (plain, None)


def test_a_pseudo_words_texts_share_one_font(test_fonts) -> None:
    def conditions(texts: list[str]) -> list[Condition]:
        style = RenderStyle(font=AUTO_FONT)
        return [Condition("random-class", i, 0.07, Placement.CENTER, style, text) for i, text in enumerate(texts)]

    resolved, info = fonts.resolve_fonts(conditions(["피자", "쓰레기통"]))
    assert {Path(c.style.font) for c in resolved} == {SUBSET} and len(info["words"]) == 1
    with pytest.raises(RenderError, match="every character"):  # no one font has both Latin and Hangul here
        fonts.resolve_fonts(conditions(["pizza", "피자"]))


def test_the_default_font_falls_back_for_a_word_it_cannot_draw(test_fonts, vocab_files) -> None:
    cfg = load_synthetic_config(None, {"data": "sample", "vocab": str(vocab_files[1])})
    conditions, info = fonts.resolve_fonts(list_conditions(cfg, load_attack_vocab(cfg.vocab, get_imagenet_class_set())))
    assert {Path(c.style.font) for c in conditions} == {SUBSET}
    assert {d["requested"] for d in info["words"]} == {DEFAULT_FONT.name}


# --------------------------------------------------------------------------------------------
# Vocabularies: babel:LANG, `language:`, several --vocab


def test_babel_ko_has_its_words_and_counts_what_it_lacks() -> None:
    vocab = load_babel_vocab("KO")
    targets = {w.target_index: w.text for w in vocab.words}
    assert targets[963] == "피자" and targets[412] == "쓰레기통" and 605 not in targets  # no Korean "iPod"
    assert len(vocab.words) == 646 and {w.language for w in vocab.words} == {"ko"}
    assert vocab.name == "babel:ko" and any("352 are skipped" in n for n in vocab.notes)
    assert any("2 name(s) shared" in n for n in vocab.notes)
    assert all(len(w.text) <= 40 for w in load_babel_vocab("mk").words)
    assert resolve_vocab_path("babel:KO") == "babel:ko"
    with pytest.raises(ConfigError, match="Did you mean"):
        load_babel_vocab("kor")


def test_several_vocabularies_combine_with_their_languages(vocab_files) -> None:
    en, ko = vocab_files
    cfg = load_synthetic_config(None, {"data": "sample", "vocab": [str(en), "babel:ko", str(ko)]})
    assert cfg.vocab == (str(en), "babel:ko", str(ko))
    vocab = load_attack_vocab(cfg.vocab, get_imagenet_class_set())
    languages = {w.text: w.language for w in vocab.words}
    assert languages["pizza"] == "en" and languages["피자"] == "ko" and len(vocab.words) == 2 + 646
    assert any("ko5: 5 word(s) given by an earlier vocabulary left out" in n for n in vocab.notes)
    # One vocabulary keeps the value (and so the fingerprint) it had before --vocab took several.
    single = load_synthetic_config(None, {"data": "sample", "vocab": [str(en)]})
    assert single.vocab == str(en) and f'"vocab": "{en}"' in single.fingerprint()
    with pytest.raises(ConfigError, match="twice"):
        load_synthetic_config(None, {"data": "sample", "vocab": [str(en), str(en)]})


# --------------------------------------------------------------------------------------------
# --class-language


def test_class_language_names_templates_and_fingerprint(tmp_path) -> None:
    imagenet = get_imagenet_class_set()
    ko = get_class_language("KO", imagenet)
    assert ko.names[963] == "피자" and ko.names[605] == imagenet.names[605] and ko.n_english == 352
    assert ko.templates is None and ko.choose_templates(("a photo of a {}.",), "photo") == ("{}",)
    own = tmp_path / "t.yaml"
    own.write_text("- '{} 사진'\n")
    assert ko.choose_templates(("{} 사진",), str(own)) == ("{} 사진",)  # a templates file is used as given
    zh = get_class_language("zh", imagenet)
    assert zh.choose_templates(("x {}",), "openai") == get_language_templates("zh") and len(zh.templates) == 80
    assert all(t.count("{}") == 1 for lang in ("ar", "it", "ja", "zh") for t in get_language_templates(lang))
    assert get_class_language("en", imagenet) is None
    default = load_synthetic_config(None, {"data": "sample"})
    assert "class_language" not in default.fingerprint()
    assert '"class_language": "ko"' in load_synthetic_config(None, {"data": "sample", "class_language": "KO"}).fingerprint()
    with pytest.raises(ConfigError, match="Babel-ImageNet has no class names"):
        get_class_language("xx", imagenet)


# --------------------------------------------------------------------------------------------
# Runs


@pytest.fixture(scope="module")
def mixed_run(vocab_files, cache_dir, tmp_path_factory) -> Path:
    """eval of 2 English words and 5 Korean ones (2 aimed at the same targets), `--font auto`, 8 images."""
    en, ko = vocab_files
    out = tmp_path_factory.mktemp("mixed") / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(fonts.FONT_DIRS_ENV, str(FONT_DIR))
        result = runner.invoke(app, ["eval", *DEMO, "--limit", "8", "--vocab", str(en), "--vocab", str(ko), "--font",
                                     "auto", "--fraction", "0.04", "--fraction", "0.1", "--placement", "paper8",
                                     "--placement", "random", "--placement", "center", "--out", str(out),
                                     "--cache-dir", str(cache_dir)])
    assert result.exit_code == 0, result.output
    return out


def test_hangul_is_drawn_at_the_requested_fraction(mixed_run) -> None:
    records = pd.read_parquet(mixed_run / "records.parquet")
    attacked = records[records["word"] != ""]
    assert set(attacked.loc[attacked["word"].isin(KOREAN), "font"]) == {SUBSET.name}
    assert set(attacked.loc[attacked["word"].isin(ENGLISH), "font"]) == {DEFAULT_FONT.name}
    for words in (KOREAN, ENGLISH):
        rows = attacked[attacked["word"].isin(words)]
        error = (rows["pixel_cover"] - rows["fraction"]).abs() / rows["fraction"]
        assert len(rows) == 8 * 2 * 3 * len(words) and (error <= 0.10).mean() >= 0.95
    info = json.loads((mixed_run / "run.json").read_text())
    assert {w["text"]: w["language"] for w in info["vocab"]["words"]} == {
        **{w: "en" for w in ENGLISH}, **{w: "ko" for w in KOREAN}}
    assert {d["word"]: d["file"] for d in info["fonts"]["words"]}["피자"] == SUBSET.name


def test_the_same_target_side_by_side_across_languages(mixed_run, tmp_path) -> None:
    table = pd.read_csv(mixed_run / PER_TARGET_LANGUAGE_CSV)
    assert set(table["target_index"]) == {963, 412}  # the Korean-only targets have no English word beside them
    pizza = table[(table["target_index"] == 963) & (table["fraction"] == 0.1) & (table["placement"] == "paper8")]
    assert list(pizza["language"]) == ["en", "ko"] and list(pizza["word"]) == ["pizza", "피자"]
    assert (pizza["asr_ci_low"] <= pizza["asr"]).all() and (pizza["asr"] <= pizza["asr_ci_high"]).all()
    assert (pizza["n_images"] == 8).all()
    result = runner.invoke(app, ["report", str(mixed_run), "--out", str(tmp_path / "report")])
    assert result.exit_code == 0, result.output
    page = (tmp_path / "report" / "report.md").read_text()
    assert "## Languages" in page and "`피자`" in page
    assert (tmp_path / "report" / PER_TARGET_LANGUAGE_CSV).is_file()


def test_one_language_writes_no_language_table() -> None:
    per_word = pd.DataFrame({"model": ["m"], "pretrained": ["p"], "defence": ["none"], "word": ["pizza"],
                             "target_index": [963], "target_name": ["pizza"], "fraction": [0.1],
                             "placement": ["paper8"], "n_images": [4], "asr": [0.5], "asr_ci_low": [0.1],
                             "asr_ci_high": [0.9]})
    assert build_per_target_language(per_word, {"pizza": "en"}) is None
    assert build_per_target_language(per_word, {}) is None


def test_babel_words_in_a_run(cache_dir, tmp_path) -> None:
    out = tmp_path / "run"
    result = runner.invoke(app, ["eval", *DEMO, "--limit", "2", "--vocab", "babel:OM", "--fraction", "0.07",
                                 "--placement", "center", "--out", str(out), "--cache-dir", str(cache_dir)])
    assert result.exit_code == 0, result.output
    info = json.loads((out / "run.json").read_text())
    assert info["config"]["vocab"] == "babel:om" and len(info["vocab"]["words"]) == 18
    assert "982 are skipped" in " ".join(info["vocab"]["notes"]) and "fonts" not in info
    assert len(pd.read_csv(out / "per_word.csv")) == 18 and not (out / PER_TARGET_LANGUAGE_CSV).exists()


def test_class_language_in_a_run(vocab_files, cache_dir, tmp_path) -> None:
    out = tmp_path / "run"
    result = runner.invoke(app, ["eval", *DEMO, "--limit", "2", "--vocab", str(vocab_files[0]), "--fraction", "0.07",
                                 "--placement", "center", "--class-language", "ko", "--out", str(out),
                                 "--cache-dir", str(cache_dir)])
    assert result.exit_code == 0, result.output
    info = json.loads((out / "run.json").read_text())
    assert info["class_language"] == {"language": "ko", "names_in_language": 648, "names_in_english": 352,
                                      "templates": "the bare class name {}", "template_count": 1}
    assert info["templates"]["count"] == 1 and info["models"][0]["classifier_from_cache"] is False
    result = runner.invoke(app, ["report", str(out), "--out", str(tmp_path / "report")])
    assert result.exit_code == 0, result.output
    assert "class names in 'ko' (--class-language): 648 from Babel-ImageNet" in (
        tmp_path / "report" / "report.md").read_text()


def test_vlm_asks_with_the_class_names_in_the_class_language(vocab_files, cache_dir, tmp_path) -> None:
    from vlm_builders import save_tiny_llava

    llava = save_tiny_llava(tmp_path / "tiny-llava")
    out = tmp_path / "run"
    result = runner.invoke(app, ["vlm", "--data", "sample", "--model", str(llava), "--limit", "2", "--vocab",
                                 str(vocab_files[0]), "--fraction", "0.1", "--placement", "center", "--class-language",
                                 "ko", "--device", "cpu", "--workers", "0", "--cache-dir", str(cache_dir), "--out",
                                 str(out)])
    assert result.exit_code == 0, result.output
    records = pd.read_parquet(out / "records.parquet")
    attacked = records[records["word"] != ""]
    assert set(attacked["attack_label"]) == {"피자", "쓰레기통"}  # the options, as the question names them
    korean = get_class_language("ko", get_imagenet_class_set()).names
    assert all(label == korean[t] for label, t in zip(records["object_label"], records["true_index"]))
    assert json.loads((out / "run.json").read_text())["class_language"]["names_in_english"] == 352
