"""What a vision-language chat model's files say before its weights load (the transformers chat
backend, `chat.py`): where they are (a save_pretrained folder, or the Hugging Face cache offline) and
the id of their content, the config's family (an AutoModelForImageTextToText model), the processor
and chat template, and the canvas size each processor takes.

What each family's processor does to the uint8 canvas it receives (the canvas is handed over unchanged):

| family | processor | native_image_size |
|---|---|---|
| llava (1.5) | CLIP: shortest edge resized to `size` (bicubic), centre crop to `crop_size`; a square canvas of the crop size passes unresized | crop_size, e.g. (336, 336) |
| llava_next | any-res: the grid resolution that best fits the aspect is chosen among `image_grid_pinpoints`, the canvas resized into it keeping aspect and padded, cut into tiles, plus a resized global view | None |
| llava_onevision | as llava_next (SigLIP, 384 tiles) | None |
| qwen2_vl, qwen2_5_vl | resized (keeping aspect) so each side is a multiple of patch x merge size (28) and the area lies within min/max pixels; no crop, no pad | None |
| idefics3, smolvlm | longest edge resized to `size`, split into square tiles of `max_image_size` plus a global view; keeps aspect | None |
| paligemma | resized to its fixed square (224, 448 or 896), aspect not kept | (h, w) of `size` |
| gemma3 | resized to 896 x 896, aspect not kept (pan-and-scan off) | (896, 896) |

The canvas a task draws on (`get_default_canvas_size`) is the native size where there is one; a processor
that keeps the aspect ratio gets a square of its tile (llava_next / llava_onevision: `crop_size` or `size`,
e.g. 336 / 384; idefics3 / smolvlm: `max_image_size`, e.g. 364 / 512), and Qwen2-VL, which has no tile, a
square of 448 (16 x 16 merged patches of 28) rounded down to its patch x merge size and kept within its
min / max pixels: sizes each processor takes without upsampling a tile.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from typoattack.backends.base import ChatModelFacts
from typoattack.backends.transformers.library import require_transformers
from typoattack.backends.transformers.weights import is_open_clip_model_name
from typoattack.errors import ConfigError, WeightsError

TESTED_FAMILIES = ("llava", "llava_next", "llava_onevision", "qwen2_vl", "qwen2_5_vl", "idefics3", "smolvlm",
                   "paligemma", "gemma3")
"""model_type values this backend is written and documented for; other AutoModelForImageTextToText models load
too, through the same generic path."""
_PROMPT_ONLY_FAMILIES = ("paligemma",)
"""Families without a chat template whose processor builds the prompt itself (image tokens, BOS, newline)."""
VLM_FEATURE = "`typoattack vlm`"
"""What needs the chat backend, for the message of a missing `transformers` extra."""
SUPPLY_HELP = ("pass a folder written by save_pretrained (config.json, weights, processor and tokenizer files), "
               "or download the model into the Hugging Face cache on a machine with network access "
               "(`hf download ORG/NAME`) and copy the cache (HF_HOME) here")


def check_vision_language_model(name: str, trust_remote_code: bool = False) -> ChatModelFacts:
    """Check that a model can be loaded by this backend and read its input sizes, without loading its weights
    (the folder or cached snapshot, its config, its processor and chat template).

    Raises:
        WeightsError: The folder or the cached model, or its processor, tokenizer or chat template, is missing.
        ConfigError: The model is not a vision-language model this backend can run, or needs
            `--trust-remote-code`; transformers is not installed (MissingExtraError).
    """
    _, weights_id, family, processor = load_processor(name, trust_remote_code)
    return ChatModelFacts(weights_id, family, get_native_image_size(processor.image_processor),
                          get_default_canvas_size(processor.image_processor))


def load_processor(name: str, trust_remote_code: bool) -> tuple[Path, str, str, Any]:
    """(folder, weights id, family, AutoProcessor) of a model, its config, processor and chat template checked.

    Raises:
        WeightsError, ConfigError: As `chat.create_vision_language_model`.
    """
    require_transformers(VLM_FEATURE)
    from transformers import AutoProcessor

    folder, weights_id = resolve_model_folder(name)
    family = check_model_config(name, folder, trust_remote_code)
    try:
        processor = AutoProcessor.from_pretrained(folder, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise describe_load_error(name, "processor", exc) from None
    if getattr(processor, "image_processor", None) is None or getattr(processor, "tokenizer", None) is None:
        raise WeightsError(f"{name}: no image processor and tokenizer found (processor_config.json or "
                           f"preprocessor_config.json, tokenizer files); {SUPPLY_HELP}")
    if getattr(processor, "chat_template", None) is None and family not in _PROMPT_ONLY_FAMILIES:
        raise WeightsError(f"{name}: the processor has no chat template (chat_template.jinja or chat_template.json); "
                           "copy the model's template into the folder")
    return folder, weights_id, family, processor


def resolve_model_folder(name: str) -> tuple[Path, str]:
    """The local folder of a model name and the id of its weights.

    A name that is an existing folder is used as it is (weights id: a hash of its files' content); any
    other name is a Hub id looked up in the Hugging Face cache, offline (weights id: `ID@COMMIT`).

    Raises:
        WeightsError: A path that does not exist, or a Hub id not in the cache.
    """
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    path = Path(name).expanduser()
    if path.is_dir():
        return path.resolve(), f"folder:{hash_folder(path)}"
    if path.exists():
        raise WeightsError(f"model {name}: is a file; pass the folder that save_pretrained wrote")
    looks_like_path = name.startswith(("/", ".", "~")) or name.count("/") > 1 or "\\" in name
    if looks_like_path:
        raise WeightsError(f"model folder {name} does not exist; {SUPPLY_HELP}")
    try:
        snapshot = Path(snapshot_download(repo_id=name, local_files_only=True))
    except (LocalEntryNotFoundError, HFValidationError, OSError, ValueError):
        if is_open_clip_model_name(name):
            raise WeightsError(f"{name} is an open_clip model name (a CLIP model for `typoattack eval`), not a "
                               f"vision-language chat model; {SUPPLY_HELP}") from None
        raise WeightsError(f"model {name}: no such folder and not in the Hugging Face cache (offline); "
                           f"{SUPPLY_HELP}") from None
    return snapshot, f"{name}@{snapshot.name}"


def hash_folder(folder: Path) -> str:
    """SHA-256 (first 16 hex digits) of every file's relative path and bytes in a folder, hidden entries
    (such as the Hub client's `.cache`) excluded."""
    digest = hashlib.sha256()
    files = sorted(p for p in folder.rglob("*")
                   if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts))
    for path in files:
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
        with path.open("rb") as handle:
            while block := handle.read(1 << 23):
                digest.update(block)
        digest.update(b"\0")
    return digest.hexdigest()[:16]


def check_model_config(name: str, folder: Path, trust_remote_code: bool) -> str:
    """The model family (config model_type) of a folder, after checking this backend can run it.

    Raises:
        WeightsError: No readable config.json.
        ConfigError: The model needs its own code and `trust_remote_code` is off, or it is not an
            image-text-to-text model.
    """
    from transformers import AutoConfig
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

    config_file = folder / "config.json"
    try:
        raw = json.loads(config_file.read_text())
    except (OSError, ValueError):
        raise WeightsError(f"model {name}: no readable config.json in {folder}; {SUPPLY_HELP}") from None
    model_type = raw.get("model_type", "")
    auto_map = raw.get("auto_map") or {}
    if model_type not in CONFIG_MAPPING:
        if not auto_map:
            raise ConfigError(f"model {name}: model_type {model_type!r} is unknown to transformers; it is not a "
                              "vision-language model this backend can load")
        if not trust_remote_code:
            raise ConfigError(f"model {name} runs its own code from the repository (auto_map in config.json); "
                              "pass --trust-remote-code if you trust it")
        if "AutoModelForImageTextToText" not in auto_map:
            classes = ", ".join(sorted(auto_map))
            raise ConfigError(f"model {name}: its code registers {classes}, not AutoModelForImageTextToText; "
                              "this backend cannot run it")
        return model_type
    config_class = type(AutoConfig.for_model(model_type)).__name__
    if model_type not in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES:
        raise ConfigError(f"model {name}: {config_class} ({model_type}) is not an image-text-to-text model "
                          f"(AutoModelForImageTextToText); supported families: {', '.join(TESTED_FAMILIES)}")
    return model_type


def get_native_image_size(image_processor: Any) -> tuple[int, int] | None:
    """(height, width) the image processor turns every image into, or None when it keeps the aspect ratio
    (any-res tiles, image splitting, dynamic resolution, shortest-edge resize without a crop)."""
    if getattr(image_processor, "image_grid_pinpoints", None) or getattr(image_processor, "do_image_splitting", False) \
            or getattr(image_processor, "do_pan_and_scan", False):
        return None
    if getattr(image_processor, "do_center_crop", False):
        crop = _size_fields(getattr(image_processor, "crop_size", None))
        if "height" in crop and "width" in crop:
            return int(crop["height"]), int(crop["width"])
    size = _size_fields(getattr(image_processor, "size", None))
    if getattr(image_processor, "do_resize", True) and "height" in size and "width" in size:
        return int(size["height"]), int(size["width"])
    return None


QWEN_CANVAS_SIDE = 448
"""Side of the default canvas of a dynamic-resolution processor without tiles (Qwen2-VL)."""


def get_default_canvas_size(image_processor: Any) -> tuple[int, int] | None:
    """(height, width) of the canvas a task draws for a model: its native size where the processor has one,
    else a square of its tile, else (dynamic resolution: Qwen2-VL) QWEN_CANVAS_SIDE rounded down to a
    multiple of patch x merge size within the processor's pixel bounds; None when the processor gives no
    size (the user must choose one). See the module docstring."""
    native = get_native_image_size(image_processor)
    if native is not None:
        return native
    size = _size_fields(getattr(image_processor, "size", None))
    if getattr(image_processor, "image_grid_pinpoints", None):
        crop = _size_fields(getattr(image_processor, "crop_size", None))
        side = crop.get("height") or size.get("height") or size.get("shortest_edge")
    elif getattr(image_processor, "do_image_splitting", False):
        side = _size_fields(getattr(image_processor, "max_image_size", None)).get("longest_edge")
    elif getattr(image_processor, "patch_size", None) and getattr(image_processor, "merge_size", None):
        factor = int(image_processor.patch_size) * int(image_processor.merge_size)
        low = getattr(image_processor, "min_pixels", None) or size.get("shortest_edge") or factor * factor
        high = getattr(image_processor, "max_pixels", None) or size.get("longest_edge") or QWEN_CANVAS_SIDE ** 2
        side = min(QWEN_CANVAS_SIDE, int(high ** 0.5)) // factor * factor
        side = max(side, -(-int(low ** 0.5) // factor) * factor)
    else:
        side = size.get("height") or size.get("shortest_edge") or size.get("longest_edge")
    return None if not side else (int(side), int(side))


def _size_fields(size: Any) -> dict[str, Any]:
    """The set fields of a processor size (a dict or a SizeDict)."""
    if size is None:
        return {}
    if isinstance(size, dict):
        return {k: v for k, v in size.items() if v is not None}
    return {k: getattr(size, k) for k in ("height", "width", "shortest_edge", "longest_edge")
            if getattr(size, k, None) is not None}


def describe_load_error(name: str, part: str, exc: Exception) -> Exception:
    """One-line error for a processor or model that failed to load."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if "trust_remote_code" in str(exc):
        return ConfigError(f"model {name}: its {part} runs code from the repository; pass --trust-remote-code "
                           "if you trust it")
    return WeightsError(f"model {name}: cannot load its {part} ({text[:200]}); {SUPPLY_HELP}")

