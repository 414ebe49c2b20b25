"""Model loading: open_clip names, pretrained tags, checkpoint files, hf-hub: and local-dir: ids,
plus device and precision, resolved here and nowhere else."""

from __future__ import annotations

import contextlib
import hashlib
import functools
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import open_clip
import torch
from PIL import Image
from torchvision import transforms as T

from typoattack import hub
from typoattack.config.types import SEED_PREFIX, ModelSpec, Precision, is_untrained
from typoattack.files import expand_path
from typoattack.constants import MODEL_CONFIGS_DIR, SHIPPED_WEIGHTS, WEIGHTS_DIR
from typoattack.errors import ConfigError, WeightsError, suggest

TINY_MODEL = "typoattack-tiny"
HF_HUB_PREFIX = "hf-hub:"
LOCAL_DIR_PREFIX = "local-dir:"

_WEIGHTS_HELP = (
    "supply weights with --pretrained /path/to/checkpoint.pt, --model local-dir:/path/to/folder, "
    "or put them in the Hugging Face cache (HF_HOME) on a machine with network access"
)


def register_model_configs() -> None:
    """Register typoattack's own open_clip configs (the tiny pipeline-test model and the demo
    reader) once."""
    if TINY_MODEL not in open_clip.list_models():
        open_clip.add_model_config(MODEL_CONFIGS_DIR)


register_model_configs()


@dataclass(frozen=True, eq=False)
class LoadedModel:
    """A model ready to classify canvases, with what travels with it.

    Attributes:
        spec: What was asked for.
        model: The open_clip model in eval mode on `device`.
        tokenizer: open_clip tokenizer of the model.
        canvas_transform: PIL -> PIL: open_clip's eval resize and centre crop (no normalisation).
        transform_key: Text identifying `canvas_transform` (keys the canvas cache).
        canvas_size: (height, width) of the model input.
        mean: Per-channel normalisation mean (RGB, for inputs in [0, 1]).
        std: Per-channel normalisation std.
        device: Where the model runs.
        precision: Encoder precision.
        weights_id: Identifies the weights (keys the classifier cache).
        encode_image: float [B, 3, H, W] normalised images -> L2-normalised features [B, D]
            (the model's encoder, compiled when asked).
    """

    spec: ModelSpec
    model: torch.nn.Module
    tokenizer: Callable[..., torch.Tensor]
    canvas_transform: Callable[[Image.Image], Image.Image]
    transform_key: str
    canvas_size: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    device: torch.device
    precision: Precision
    weights_id: str
    encode_image: Callable[[torch.Tensor], torch.Tensor]


def resolve_device(name: str) -> torch.device:
    """Turn 'auto', 'cpu', 'cuda' or 'cuda:N' into a device that exists.

    Raises:
        ConfigError: The name is unknown, or CUDA is asked for and not available.
    """
    text = name.strip().lower()
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if text == "cpu":
        return torch.device("cpu")
    if text == "cuda" or text.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {name} asked for, but no CUDA GPU is visible; use --device cpu or auto")
        index = text.partition(":")[2]
        if index and (not (index.isascii() and index.isdigit()) or int(index) >= torch.cuda.device_count()):
            raise ConfigError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) are visible")
        return torch.device(text)
    raise ConfigError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N")


def check_precision(precision: Precision, device: torch.device) -> None:
    """Raise ConfigError when the precision cannot run on the device."""
    if precision is Precision.FP16 and device.type != "cuda":
        raise ConfigError("precision fp16 needs a CUDA device; use fp32 (or bf16) on CPU")


def get_autocast(precision: Precision, device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """Return the autocast context for the precision (a no-op context for fp32)."""
    if precision is Precision.FP32:
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision is Precision.BF16 else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def get_canvas_size(spec: ModelSpec) -> tuple[int, int] | None:
    """Return the model's input size from its open_clip config without loading weights, if known."""
    if spec.name.startswith((HF_HUB_PREFIX, LOCAL_DIR_PREFIX)):
        return None
    cfg = open_clip.get_model_config(spec.name)
    if not cfg:
        return None
    size = cfg.get("vision_cfg", {}).get("image_size")
    if isinstance(size, int):
        return (size, size)
    if isinstance(size, (list, tuple)) and len(size) == 2:
        return (int(size[0]), int(size[1]))
    return None


def _check_spec(spec: ModelSpec) -> str:
    """Validate name and pretrained before any loading; return the kind of weights source."""
    name, pretrained = spec.name, spec.pretrained
    if name.startswith(LOCAL_DIR_PREFIX):
        folder = expand_path(name[len(LOCAL_DIR_PREFIX):])
        if not folder.is_dir():
            raise WeightsError(f"local-dir folder {folder} does not exist; it must hold open_clip_config.json and the weights")
        if not (folder / "open_clip_config.json").is_file():
            raise WeightsError(f"local-dir folder {folder} has no open_clip_config.json")
        if not any(any(folder.glob(pattern)) for pattern in ("*.safetensors", "*.bin", "*.pth")):
            raise WeightsError(f"local-dir folder {folder} holds no weights (*.safetensors, *.bin or *.pth)")
        return "local-dir"
    if name.startswith(HF_HUB_PREFIX):
        return "hf-hub"
    if name not in open_clip.list_models():
        raise WeightsError(
            f"unknown open_clip model {name!r}.{suggest(name, open_clip.list_models())} "
            "Run `typoattack models` to list them"
        )
    if not pretrained:
        tags = list_pretrained_tags(name)
        raise WeightsError(
            f"no weights given for {name}: pass --pretrained with a tag ({', '.join(tags[:6]) or 'none known'}), "
            "a checkpoint file, or seed:N for random weights"
        )
    if is_untrained(pretrained):
        digits = pretrained[len(SEED_PREFIX):]
        if not (digits.isascii() and digits.isdigit()):
            raise WeightsError(f"pretrained {pretrained!r}: write seed:N with an integer N, e.g. seed:0")
        return "seed"
    if (name, pretrained) in SHIPPED_WEIGHTS:
        if not get_shipped_weights_path(name, pretrained).is_file():
            raise WeightsError(f"the weights file of {name}/{pretrained} is missing from the installed package "
                               f"({get_shipped_weights_path(name, pretrained)}); reinstall typoattack")
        return "shipped"
    if open_clip.get_pretrained_cfg(name, pretrained):
        return "tag"
    if expand_path(pretrained).is_file():
        return "file"
    looks_like_path = "/" in pretrained or pretrained.endswith((".pt", ".pth", ".bin", ".safetensors", ".ckpt"))
    if looks_like_path:
        raise WeightsError(f"checkpoint file {pretrained} does not exist")
    tags = list_pretrained_tags(name)
    raise WeightsError(
        f"unknown pretrained tag {pretrained!r} for {name}.{suggest(pretrained, tags)} "
        f"Known tags: {', '.join(tags) or 'none'}; or give a checkpoint file path"
    )


def check_weights_available(spec: ModelSpec, cache_dir: str | None = None) -> None:
    """Fail early (before any run starts) when a tag's weights can neither be found nor downloaded.

    Raises:
        WeightsError: The Hub is unreachable and the weights are not in the local cache.
    """
    kind = _check_spec(spec)
    if kind != "tag":
        return
    if hub.is_hub_reachable():
        return
    cfg = open_clip.get_pretrained_cfg(spec.name, str(spec.pretrained))
    if cfg.get("file") and Path(cfg["file"]).is_file():
        return
    hub_id = cfg.get("hf_hub", "")
    if hub_id:
        from huggingface_hub import try_to_load_from_cache

        repo, filename = hub_id.rstrip("/").rsplit("/", 1) if not hub_id.endswith("/") else (hub_id.rstrip("/"), "")
        names = [filename] if filename else ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
        if filename.endswith(".bin"):
            names.append(filename[:-4] + ".safetensors")
        for name in names:
            if isinstance(try_to_load_from_cache(repo, name, cache_dir=cache_dir), str):
                return
    url = cfg.get("url", "")
    if url and (expand_path(cache_dir or "~/.cache/clip") / Path(url).name).is_file():
        return
    raise WeightsError(f"weights for {spec.label} are not in the local cache and huggingface.co cannot be reached; "
                       f"{_WEIGHTS_HELP}")


def get_open_clip_kwargs(spec: ModelSpec) -> dict[str, Any]:
    """Keyword arguments for open_clip.create_model_and_transforms beyond name and weights.

    OpenAI weights were trained with QuickGELU; open_clip only warns when a tag that needs it is
    loaded into a config without it (e.g. ViT-B-32 + openai), which silently changes every
    activation. Here QuickGELU is forced whenever the tag says so.
    """
    kind = _check_spec(spec)
    if kind == "tag" and open_clip.get_pretrained_cfg(spec.name, str(spec.pretrained)).get("quick_gelu", False):
        return {"force_quick_gelu": True}
    return {}


def get_weights_id(spec: ModelSpec) -> str:
    """Return a string that changes whenever the weights a spec loads change."""
    kind = _check_spec(spec)
    if kind == "shipped":
        # By content, so a wheel install and a clone share their classifier caches.
        path = get_shipped_weights_path(spec.name, str(spec.pretrained))
        return f"{spec.name}|shipped:{spec.pretrained}|{hashlib.sha256(path.read_bytes()).hexdigest()[:16]}"
    if kind == "file":
        p = expand_path(str(spec.pretrained)).resolve()
        st = p.stat()
        return f"{spec.name}|file:{p}|{st.st_size}|{st.st_mtime_ns}"
    if kind == "local-dir":
        folder = expand_path(spec.name[len(LOCAL_DIR_PREFIX):]).resolve()
        stamp = sorted((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in folder.iterdir() if f.is_file())
        return f"local-dir:{folder}|{stamp}"
    return f"{spec.name}|{spec.pretrained}"


def get_canvas_transform(spec: ModelSpec) -> tuple[Callable[[Image.Image], Image.Image], str, tuple[int, int]]:
    """open_clip's eval resize + crop for a model, without loading (or downloading) its weights.

    Returns:
        (transform, transform_key, canvas_size); the key equals that of `create_model(spec)`.

    Raises:
        WeightsError: The model is unknown, or its preprocessing cannot be known offline (hf-hub:).
    """
    from dataclasses import asdict

    from open_clip.transform import PreprocessCfg, merge_preprocess_dict

    kind = _check_spec(spec)
    pp = asdict(PreprocessCfg())
    if kind == "local-dir":
        folder = expand_path(spec.name[len(LOCAL_DIR_PREFIX):])
        local = json.loads((folder / "open_clip_config.json").read_text())
        model_cfg = local.get("model_cfg", {})
        pp = merge_preprocess_dict(pp, local.get("preprocess_cfg", {}))
    elif kind == "hf-hub":
        raise WeightsError(f"{spec.name}: the canvas transform of an hf-hub: model is known only after loading it; "
                           "run `typoattack eval` (it prepares the canvases on first use)")
    else:
        model_cfg = open_clip.get_model_config(spec.name) or {}
        if kind == "tag":
            pp = merge_preprocess_dict(pp, open_clip.get_pretrained_cfg(spec.name, str(spec.pretrained)))
    size = model_cfg.get("vision_cfg", {}).get("image_size")
    if size is not None:
        pp["size"] = size
    return create_canvas_transform(pp)


def create_canvas_transform(preprocess_cfg: dict[str, Any] | None = None, size: int | None = None,
                            ) -> tuple[Callable[[Image.Image], Image.Image], str, tuple[int, int]]:
    """The canvas part (resize, crop) of open_clip's eval transform for a preprocessing config.

    Args:
        preprocess_cfg: open_clip PreprocessCfg fields (None: its defaults, a bicubic resize of
            the shortest side and a centre crop).
        size: Overrides the config's input size.

    Returns:
        (transform PIL -> PIL, transform_key, canvas_size (height, width)).
    """
    from dataclasses import asdict

    from open_clip.transform import PreprocessCfg, image_transform_v2

    pp = dict(preprocess_cfg) if preprocess_cfg is not None else asdict(PreprocessCfg())
    if size is not None:
        pp["size"] = size
    preprocess = image_transform_v2(PreprocessCfg(**pp), is_train=False)
    transform, key, canvas_size, _, _ = _split_preprocess(preprocess)
    return transform, key, canvas_size


def _split_preprocess(preprocess: Any) -> tuple[Callable[[Image.Image], Image.Image], str, tuple[int, int], tuple, tuple]:
    """Split open_clip's eval transform into the canvas part (resize, crop), its key and output
    size, and the Normalize stats."""
    canvas_steps = []
    mean = std = None
    for t in preprocess.transforms:
        if isinstance(t, T.Normalize):
            mean, std = tuple(float(v) for v in t.mean), tuple(float(v) for v in t.std)
        elif isinstance(t, (T.Resize, T.CenterCrop)) or type(t).__name__ in ("ResizeKeepRatio", "CenterCropOrPad"):
            canvas_steps.append(t)
    if mean is None or std is None or not canvas_steps:
        raise WeightsError(f"unexpected open_clip preprocessing {preprocess}; cannot derive the canvas transform")
    transform = T.Compose(canvas_steps)
    probe = transform(Image.new("RGB", (640, 480)))
    return transform, repr(transform), (probe.height, probe.width), mean, std


def _is_convnet(model: torch.nn.Module) -> bool:
    visual = getattr(model, "visual", None)
    return type(visual).__name__ in ("ModifiedResNet",) or "convnext" in type(getattr(visual, "trunk", None)).__name__.lower()


def create_model(spec: ModelSpec, device: torch.device, precision: Precision,
                 cache_dir: str | None = None, compile: bool = False) -> LoadedModel:
    """Create an open_clip model with its weights, tokenizer and canvas transform.

    Args:
        spec: Model name and weights (tag, checkpoint file, seed:N, or an hf-hub:/local-dir: id).
        device: Where to run.
        precision: Encoder precision (weights stay fp32; bf16/fp16 use autocast).
        cache_dir: Where open_clip caches downloaded weights (None = its default).
        compile: Wrap the image encoder in torch.compile.

    Raises:
        WeightsError: The name or tag is unknown, or the weights cannot be found or loaded.
    """
    kind = _check_spec(spec)
    check_precision(precision, device)
    weights_id = get_weights_id(spec)
    pretrained: str | None = spec.pretrained
    if kind in ("seed", "hf-hub", "local-dir"):
        pretrained = None
    elif kind == "shipped":  # loaded as a checkpoint file, the way users' own files are
        pretrained = str(get_shipped_weights_path(spec.name, str(spec.pretrained)))
    try:
        with hub.hub_offline_if_unreachable(), torch.random.fork_rng(devices=[]):
            if kind == "seed":
                torch.manual_seed(int(str(spec.pretrained)[len(SEED_PREFIX):]))
            model, _, preprocess = open_clip.create_model_and_transforms(
                spec.name, pretrained=pretrained, device=device, cache_dir=cache_dir,
                load_weights=kind != "seed", **get_open_clip_kwargs(spec),
            )
    except (RuntimeError, OSError, ValueError, KeyError) as e:
        raise WeightsError(f"cannot load weights for {spec.label}: {_first_line(e)}; {_WEIGHTS_HELP}") from None
    tokenizer = _LazyTokenizer(spec, cache_dir)
    model.eval()
    if _is_convnet(model):
        model = model.to(memory_format=torch.channels_last)
    encode = functools.partial(model.encode_image, normalize=True)
    if compile:
        encode = torch.compile(encode)
    transform, transform_key, canvas_size, mean, std = _split_preprocess(preprocess)
    return LoadedModel(spec, model, tokenizer, transform, transform_key, canvas_size,
                       mean, std, device, precision, weights_id, encode)  # type: ignore[arg-type]


def _first_line(e: BaseException) -> str:
    first = str(e).splitlines()[0] if str(e) else type(e).__name__
    return first[:300] + "..." if len(first) > 300 else first


class _LazyTokenizer:
    """The model's open_clip tokenizer, created on first use: a run whose classifier is cached
    never needs it (creating one takes a noticeable share of a short run)."""

    def __init__(self, spec: ModelSpec, cache_dir: str | None) -> None:
        self.spec, self.cache_dir = spec, cache_dir
        self._tokenizer: Callable[..., torch.Tensor] | None = None

    def _get(self) -> Callable[..., torch.Tensor]:
        if self._tokenizer is None:
            try:
                with hub.hub_offline_if_unreachable():
                    self._tokenizer = open_clip.get_tokenizer(self.spec.name, cache_dir=self.cache_dir)
            except (RuntimeError, OSError, ValueError, KeyError) as e:
                raise WeightsError(f"cannot load the tokenizer of {self.spec.label}: {_first_line(e)}; "
                                   f"{_WEIGHTS_HELP}") from None
        return self._tokenizer

    def __call__(self, texts: str | list[str], *args: Any, **kwargs: Any) -> torch.Tensor:
        """int64 [n, context_length] token ids of `texts`."""
        return self._get()(texts, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name in ("spec", "cache_dir"):
            raise AttributeError(name)
        return getattr(self._get(), name)


def list_model_names() -> list[str]:
    """open_clip's model names, typoattack's own configs included."""
    return list(open_clip.list_models())


def list_pretrained_tags(name: str) -> list[str]:
    """The pretrained tags open_clip knows for model `name`.

    Raises:
        WeightsError: The model name is unknown (the message suggests the nearest names).
    """
    if name not in open_clip.list_models():
        raise WeightsError(f"unknown open_clip model {name!r}.{suggest(name, open_clip.list_models())}")
    shipped = [tag for model, tag in SHIPPED_WEIGHTS if model == name]
    return shipped + list(open_clip.list_pretrained_tags_by_model(name))


def get_shipped_weights_path(name: str, pretrained: str) -> Path:
    """The file of weights the package ships for (model, tag), e.g. typoattack-reader-tiny/ci500."""
    return WEIGHTS_DIR / SHIPPED_WEIGHTS[(name, pretrained)]
