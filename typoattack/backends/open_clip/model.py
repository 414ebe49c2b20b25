"""The open_clip backend: model names, pretrained tags, checkpoint files, hf-hub: and local-dir: ids,
the canvas geometry of open_clip's eval transform, and `OpenClipModel`, a loaded model with the
zero-shot classifier, head ablation and Defense-Prefix hooks."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import open_clip
import torch
from PIL import Image
from torchvision import transforms as T

from typoattack import hub
from typoattack.backends.base import (
    Backend, Head, HeadRecord, InputGeometry, ZeroShotModel, check_precision, get_autocast,
)
from typoattack.backends.open_clip.heads import ablate_heads, get_head_grid
from typoattack.backends.open_clip.prefix import build_prefix_classifier, get_text_width
from typoattack.config.types import SEED_PREFIX, ModelSpec, Precision, is_untrained
from typoattack.constants import LOGIT_SCALE, MODEL_CONFIGS_DIR, SHIPPED_WEIGHTS, WEIGHTS_DIR
from typoattack.errors import WeightsError, suggest
from typoattack.files import expand_path

TINY_MODEL = "typoattack-tiny"
HF_HUB_PREFIX = "hf-hub:"
LOCAL_DIR_PREFIX = "local-dir:"
# Classes encoded per open_clip builder call; progress is reported between calls.
_CLASSES_PER_CALL = 50

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


def get_geometry(spec: ModelSpec) -> InputGeometry:
    """open_clip's eval resize + crop and normalisation for a model, without loading (or
    downloading) its weights; equal to the geometry of the loaded model.

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
    return create_geometry(pp)


def create_geometry(preprocess_cfg: dict[str, Any] | None = None, size: int | None = None) -> InputGeometry:
    """The geometry of open_clip's eval transform for a preprocessing config.

    Args:
        preprocess_cfg: open_clip PreprocessCfg fields (None: its defaults, a bicubic resize of
            the shortest side and a centre crop).
        size: Overrides the config's input size.
    """
    from dataclasses import asdict

    from open_clip.transform import PreprocessCfg, image_transform_v2

    pp = dict(preprocess_cfg) if preprocess_cfg is not None else asdict(PreprocessCfg())
    if size is not None:
        pp["size"] = size
    return _split_preprocess(image_transform_v2(PreprocessCfg(**pp), is_train=False))


def _split_preprocess(preprocess: Any) -> InputGeometry:
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
    return InputGeometry((probe.height, probe.width), transform, repr(transform), mean, std)  # type: ignore[arg-type]


def _is_convnet(model: torch.nn.Module) -> bool:
    visual = getattr(model, "visual", None)
    return type(visual).__name__ in ("ModifiedResNet",) or "convnext" in type(getattr(visual, "trunk", None)).__name__.lower()


def create_model(spec: ModelSpec, device: torch.device, precision: Precision,
                 cache_dir: str | None = None, compile: bool = False) -> OpenClipModel:
    """Create an open_clip model with its weights, tokenizer and canvas geometry.

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
    quiet = _drop_log_records(_RANDOM_WEIGHTS_WARNING) if kind == "seed" else contextlib.nullcontext()
    try:
        with hub.hub_offline_if_unreachable(), torch.random.fork_rng(devices=[]), quiet:
            if kind == "seed":
                torch.manual_seed(int(str(spec.pretrained)[len(SEED_PREFIX):]))
            model, _, preprocess = open_clip.create_model_and_transforms(
                spec.name, pretrained=pretrained, device=device, cache_dir=cache_dir,
                load_weights=kind != "seed", **get_open_clip_kwargs(spec),
            )
    except (RuntimeError, OSError, ValueError, KeyError) as e:
        raise WeightsError(f"cannot load weights for {spec.label}: {_first_line(e)}; {_WEIGHTS_HELP}") from None
    model.eval()
    if _is_convnet(model):
        model = model.to(memory_format=torch.channels_last)
    encode = functools.partial(model.encode_image, normalize=True)
    if compile:
        encode = torch.compile(encode)
    return OpenClipModel(spec, model, _LazyTokenizer(spec, cache_dir), _split_preprocess(preprocess), device,
                         precision, weights_id, encode)


class OpenClipModel(ZeroShotModel):
    """A loaded open_clip model (see `ZeroShotModel`).

    Attributes:
        tokenizer: The model's open_clip tokenizer (created on first use).
        encode_image: float [B, 3, H, W] normalised images -> L2-normalised features [B, D]
            (the model's image encoder, compiled when asked).
    """

    backend = "open_clip"

    def __init__(self, spec: ModelSpec, model: torch.nn.Module, tokenizer: Callable[..., torch.Tensor],
                 geometry: InputGeometry, device: torch.device, precision: Precision, weights_id: str,
                 encode_image: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.spec, self.model, self.tokenizer, self.geometry = spec, model, tokenizer, geometry
        self.device, self.precision, self.weights_id, self.encode_image = device, precision, weights_id, encode_image
        self.logit_scale, self.logit_bias = LOGIT_SCALE, 0.0
        self.library_version = str(open_clip.__version__)

    @property
    def family(self) -> str:
        return f"open_clip {type(getattr(self.model, 'visual', self.model)).__name__}"

    def encode_images(self, x: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(self.geometry.mean, device=x.device)
        std = torch.tensor(self.geometry.std, device=x.device)
        # The same operations as ToTensor + Normalize, run on the contiguous NHWC layout (fast);
        # permuted to NCHW the result is channels_last in memory: ResNets prefer it, and measured
        # here ViT patch embedding is no slower than on a contiguous copy.
        x = x.float().div(255).sub_(mean).div_(std).permute(0, 3, 1, 2)
        with get_autocast(self.precision, self.device):
            return self.encode_image(x)

    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        with torch.inference_mode():
            tokens = self.tokenizer(list(texts)).to(self.device)
            return self.model.encode_text(tokens, normalize=True).float()

    def build_classifier(self, classnames: Sequence[str], templates: Sequence[str],
                         progress: Callable[[int], None] | None = None) -> torch.Tensor:
        """open_clip's own `build_zero_shot_classifier`, a few classes per call so progress moves;
        always fp32 (the classifier is cached without regard to the encoder's precision)."""
        parts = []
        with torch.inference_mode():
            for start in range(0, len(classnames), _CLASSES_PER_CALL):
                chunk = list(classnames[start:start + _CLASSES_PER_CALL])
                parts.append(open_clip.build_zero_shot_classifier(
                    self.model, self.tokenizer, chunk, list(templates),
                    num_classes_per_batch=10, device=self.device,
                ).float())
                if progress:
                    progress(len(chunk))
        return torch.cat(parts, dim=1)

    def get_head_grid(self) -> tuple[int, int]:
        return get_head_grid(self.model)

    def ablate_heads(self, heads: Sequence[Head], record: bool = False
                     ) -> contextlib.AbstractContextManager[list[HeadRecord]]:
        return ablate_heads(self.model, heads, record)

    def get_patch_size(self) -> int:
        get_head_grid(self.model)  # a supported ViT, or the one-line error
        patch = self.model.visual.patch_size
        return int(patch[0] if isinstance(patch, (tuple, list)) else patch)

    def get_text_width(self) -> int:
        return get_text_width(self.model)

    def build_prefix_classifier(self, classnames: Sequence[str], vector: torch.Tensor, prompt: str,
                                progress: Callable[[int], None] | None = None) -> torch.Tensor:
        return build_prefix_classifier(self, classnames, vector, prompt, progress)


class OpenClipBackend(Backend):
    """open_clip: model names and pretrained tags, checkpoint files, hf-hub: and local-dir: ids."""

    name = "open_clip"

    def check_model(self, spec: ModelSpec, cache_dir: str | None = None) -> None:
        check_weights_available(spec, cache_dir)

    def get_input_size(self, spec: ModelSpec) -> tuple[int, int] | None:
        return get_canvas_size(spec)

    def get_geometry(self, spec: ModelSpec) -> InputGeometry:
        return get_geometry(spec)

    def get_default_geometry(self, size: int) -> InputGeometry:
        return create_geometry(size=size)

    def get_weights_id(self, spec: ModelSpec) -> str:
        return get_weights_id(spec)

    def load(self, spec: ModelSpec, device: torch.device, precision: Precision,
             compile: bool = False) -> OpenClipModel:
        return create_model(spec, device, precision, compile=compile)

    def list_models(self) -> list[str]:
        return list_model_names()

    def list_pretrained(self, name: str) -> list[str]:
        return list_pretrained_tags(name)

    def get_version(self) -> str:
        return str(open_clip.__version__)


_RANDOM_WEIGHTS_WARNING = "No pretrained weights loaded"
"""How open_clip's warning about a model initialised at random begins (logged on the root logger); seed:N asks
for random weights, and the CLI says so in its own words."""


@contextlib.contextmanager
def _drop_log_records(prefix: str) -> Iterator[None]:
    """Within the block, records logged on the root logger (as open_clip logs) whose message begins with
    `prefix` are dropped; every other record passes."""

    def keep(record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(prefix)

    root = logging.getLogger()
    root.addFilter(keep)
    try:
        yield
    finally:
        root.removeFilter(keep)


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
