"""Figure sizes, text settings and small drawing helpers shared by the figures of
`typoattack.analysis.plots` (no model code)."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from typoattack.analysis.labels import is_missing  # noqa: E402

DPI = 130
"""Resolution of every figure, in dots per inch."""

# Layout of plot_asr_vs_fraction: a grid of at most ASR_VS_FRACTION_MAX_COLS panels per row,
# each PANEL_W x PANEL_H inches, plus LEGEND_ROW_H inches per row of the figure legend
# (LEGEND_MAX_COLS entries per legend row).
ASR_VS_FRACTION_MAX_COLS = 3
PANEL_W = 5.0
PANEL_H = 3.8
LEGEND_ROW_H = 0.3
LEGEND_MAX_COLS = 5
TITLE_H = 0.6
# plot_asr_vs_fraction with one line per word: the points of one fraction are spread sideways over
# ASR_VS_FRACTION_SPREAD of the x axis (at most ASR_VS_FRACTION_SPREAD_OF_GAP of the smallest gap
# between two fractions), so words with the same ASR stay side by side instead of on top of each other.
ASR_VS_FRACTION_SPREAD = 0.15
ASR_VS_FRACTION_SPREAD_OF_GAP = 0.4
# plot_asr_vs_fraction with more than MANY_WORDS words: besides the summary over words, the
# ASR_VS_FRACTION_TOP_WORDS words with the highest mean ASR are drawn as lines.
ASR_VS_FRACTION_TOP_WORDS = 5
# Markers and line styles that tell words apart besides their colour (marker i % 10, style i % 4).
WORD_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "h")
WORD_LINESTYLES = ("-", "--", "-.", ":")

# Layout of plot_asr_by_word: one row per (fraction, placement, style); two panels per row
# (ASR, flip rate), each BAR_PANEL_BASE_W + n_words * max(BAR_W_PER_WORD_MIN, BAR_W_PER_BAR * n_models)
# inches wide
# (at least BAR_PANEL_MIN_W) and BAR_PANEL_H inches high, plus TITLE_H and LEGEND_ROW_H per row of
# the model legend (a title row, then BAR_LEGEND_MAX_COLS models per row).
BAR_PANEL_BASE_W = 1.5
BAR_W_PER_BAR = 0.28
BAR_W_PER_WORD_MIN = 0.6
BAR_PANEL_MIN_W = 5.0
BAR_PANEL_H = 3.4
BAR_LEGEND_MAX_COLS = 4

# Layout of plot_accuracy: ACC_BASE_W + ACC_W_PER_BAR * n_models * n_series inches wide
# (at least ACC_MIN_W), ACC_H inches high.
ACC_BASE_W = 2.5
ACC_W_PER_BAR = 0.55
ACC_MIN_W = 6.0
ACC_H = 5.2
ACC_LEGEND_MAX_COLS = 3

# Layout of plot_confusion: CONF_BASE_W + CONF_CELL * n_cols by CONF_BASE_H + CONF_ROW * n_rows.
CONF_CELL = 0.55
CONF_ROW = 0.4
CONF_BASE_W = 4.0
CONF_BASE_H = 2.8
CLASS_NAME_MAX = 18

# Layout of plot_examples: EX_W by EX_H inches per image, plus EX_TITLE_H for the title and key.
EX_W = 2.2
EX_H = 2.75
EX_TITLE_H = 0.8

# ASR axes: full scale (0-100%) when the highest upper 95% bound reaches ASR_FULL_SCALE_FROM (%);
# below it, the axis ends at that bound times ASR_HEADROOM, rounded up to 1, 2, 2.5 or 5 x 10^k
# (at least ASR_MIN_LIMIT %), so a small ASR is not a flat line at the bottom of the axis.
ASR_FULL_SCALE_FROM = 50.0
ASR_HEADROOM = 1.25
ASR_MIN_LIMIT = 1.0
# plot_asr_vs_fraction's ASR axis starts this share of its length below 0, so a line at 0 shows.
ASR_BOTTOM_MARGIN = 0.02

# Layout of plot_asr_ranked: at most RANK_MAX_COLS panels per row, each RANK_PANEL_W inches wide
# and RANK_BASE_H + RANK_BAR_H * n_slots inches high (n_slots: the most bars of a panel, plus one
# for the gap between its top and bottom bars), plus TITLE_H and LEGEND_ROW_H. Word and target are
# each cut to RANK_LABEL_MAX characters.
RANK_PANEL_W = 6.5
RANK_BAR_H = 0.17
RANK_BASE_H = 1.3
RANK_MAX_COLS = 2
RANK_LABEL_MAX = 22

# Layout of plot_asr_distribution and plot_asr_vs_word_length: at most ASR_VS_FRACTION_MAX_COLS
# panels of PANEL_W x PANEL_H inches per row, plus TITLE_H.

@dataclass(frozen=True)
class AsrAxis:
    """The extent of an ASR axis, in percent.

    Attributes:
        limit: The upper end of the axis (100 at full scale).
        highest: The highest ASR of the table.
        highest_upper: The highest upper 95% bound of the table.
    """

    limit: float
    highest: float
    highest_upper: float

    @property
    def zoomed(self) -> bool:
        """True when the axis ends below 100%."""
        return self.limit < 100.0

    def get_label(self, name: str = "attack success rate") -> str:
        """The axis label: `attack success rate (%)`, with its end when zoomed."""
        return f"{name} (%)" + (f", axis 0–{self.limit:g}%" if self.zoomed else "")

    def get_note(self, wrap: bool = False) -> str:
        """A line for the figure title when zoomed (else ''): the largest value the axis shows
        (two lines with `wrap`, for a narrow figure)."""
        if not self.zoomed:
            return ""
        return (f"ASR axis zoomed to 0–{self.limit:g}%: max shown {self.highest:.1f}%" + ("\n" if wrap else " ")
                + f"(highest upper 95% bound {self.highest_upper:.1f}%)")


def get_asr_axis(per_word: pd.DataFrame) -> AsrAxis:
    """The ASR axis of a figure of `per_word` (column `asr` and, when present, `asr_ci_high`; shares
    in [0, 1]).

    Full scale (0–100%) when the highest upper 95% bound reaches ASR_FULL_SCALE_FROM percent; else
    the axis ends at that bound x ASR_HEADROOM rounded up to 1, 2, 2.5 or 5 x 10^k, at least
    ASR_MIN_LIMIT percent: every value and interval stays on the axis.
    """
    highest = float(np.nan_to_num(100 * per_word["asr"].max()))
    upper = float(np.nan_to_num(100 * per_word["asr_ci_high"].max())) if "asr_ci_high" in per_word.columns else 0.0
    upper = max(upper, highest)
    if upper >= ASR_FULL_SCALE_FROM:
        return AsrAxis(100.0, highest, upper)
    want = max(upper * ASR_HEADROOM, ASR_MIN_LIMIT)
    scale = 10.0 ** math.floor(math.log10(want))
    limit = next(scale * m for m in (1.0, 2.0, 2.5, 5.0, 10.0) if scale * m >= want - 1e-12)
    return AsrAxis(min(float(f"{limit:.6g}"), 100.0), highest, upper)


PER_WORD_REQUIRED = {
    "plot_asr_vs_fraction": ["model", "pretrained", "word", "target_name", "fraction", "placement",
                             "pixel_cover_mean", "asr", "asr_ci_low", "asr_ci_high"],
    "plot_asr_by_word": ["model", "pretrained", "word", "target_name", "fraction", "placement", "asr",
                         "asr_ci_low", "asr_ci_high", "flip_rate"],
    "plot_accuracy": ["model", "pretrained", "fraction", "clean_top1", "attacked_top1"],
    "plot_asr_ranked": ["model", "pretrained", "word", "target_index", "target_name", "fraction", "placement",
                        "n_images", "asr", "asr_ci_low", "asr_ci_high"],
    "plot_asr_distribution": ["model", "pretrained", "word", "target_index", "fraction", "placement", "asr"],
    "plot_asr_vs_word_length": ["model", "pretrained", "word", "target_index", "fraction", "placement", "asr"],
}
CONFUSION_REQUIRED = ["model", "pretrained", "word", "fraction", "placement", "true_index", "pred_index", "count"]


def check_table(frame: pd.DataFrame, function: str, required: Sequence[str], what: str = "per-word table") -> None:
    """Raise ValueError when `frame` is empty or lacks a required column."""
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise ValueError(f"{function}: the {what} lacks the column(s) {', '.join(missing)}")
    if frame.empty:
        raise ValueError(f"{function}: the {what} is empty (no attacked conditions); there is nothing to plot")


def truncate_label(text: str, limit: int = CLASS_NAME_MAX) -> str:
    """`text` cut to `limit` characters with an ellipsis."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def format_word_label(word: Any, target_name: Any) -> str:
    """`"word" → target` legend label."""
    return f"“{word}” → {target_name}"


@contextmanager
def plain_text() -> Iterator[None]:
    """Matplotlib settings for the figures here: literal text (no mathtext for `$`), white background."""
    with plt.rc_context({"text.parse_math": False, "figure.facecolor": "white", "savefig.facecolor": "white",
                         "axes.titlesize": 10, "axes.labelsize": 9, "xtick.labelsize": 8, "ytick.labelsize": 8,
                         "legend.fontsize": 8, "figure.titlesize": 12}):
        yield


@contextmanager
def fallback_fonts(paths: Sequence[str | Path]) -> Iterator[None]:
    """Figures drawn inside fall back to the fonts `paths` (after the default) for characters the
    default font lacks: the fonts `--font auto` chose for words in other scripts, so a Hangul word is
    drawn in the labels, not as boxes. Nothing changes without paths."""
    import logging

    from matplotlib import font_manager

    names = []
    for path in dict.fromkeys(str(p) for p in paths):
        if not any(f.fname == path for f in font_manager.fontManager.ttflist):
            try:
                font_manager.fontManager.addfont(path)
            except (OSError, RuntimeError, ValueError):
                continue
        names += [f.name for f in font_manager.fontManager.ttflist if f.fname == path][:1]
    if not names:
        yield
        return
    quiet = logging.getLogger("matplotlib.font_manager")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # "failed to find font weight normal" for a bold-only fallback
    try:
        with matplotlib.rc_context({"font.family": [*plt.rcParams["font.family"], *dict.fromkeys(names)]}):
            yield
    finally:
        quiet.setLevel(level)


def get_colors(n: int) -> list[Any]:
    """`n` distinguishable colours (tab10, tab20 beyond 10, repeating beyond 20)."""
    cmap = plt.get_cmap("tab10" if n <= 10 else "tab20")
    return [cmap(i % cmap.N) for i in range(n)]


def select_equal(column: pd.Series, value: Any) -> pd.Series:
    """Element-wise equality that treats missing values as equal to each other."""
    if is_missing(value):
        return column.isna()
    return column == value


def save_figure(fig: Figure, path: Path, palette: bool = False) -> None:
    """Write `fig` as PNG at DPI (creating the parent folder) and close it.

    With `palette`, the PNG is stored with a 256-colour palette: photographs then take a third
    of the space, which keeps report.html (images embedded) small enough to share.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fig.savefig(path, dpi=DPI, format="png")
    finally:
        plt.close(fig)
    if palette:
        from PIL import Image

        with Image.open(path) as img:
            quantized = img.convert("RGB").quantize(256)
        quantized.save(path, optimize=True)
