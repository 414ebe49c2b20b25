"""`TransformersBackend`: Hugging Face `transformers` image-text models behind the Backend
protocol (check, geometry and weights id without loading; loading with SDPA attention in fp32)."""

from __future__ import annotations

import torch

from typoattack.backends.base import Backend, InputGeometry, check_precision
from typoattack.backends.transformers.families import Family, get_family, list_family_names, read_model_config
from typoattack.backends.transformers.geometry import create_input_geometry, load_image_processor
from typoattack.backends.transformers.library import get_transformers_version, quiet_loading, require_transformers
from typoattack.backends.transformers.model import BACKEND_NAME, TransformersModel
from typoattack.backends.transformers.weights import (
    WEIGHTS_HELP,
    ModelFolder,
    get_weights_id,
    resolve_model_folder,
)
from typoattack.config.types import SEED_PREFIX, ModelSpec, Precision, is_untrained
from typoattack.errors import ConfigError, WeightsError

_PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "spiece.model", "vocab.txt")


class TransformersBackend(Backend):
    """`--backend transformers`: `--model` is a Hub repo id (from the Hugging Face cache, offline)
    or a folder written by `save_pretrained`; `--pretrained` is a Hub revision (default main) or
    `seed:N` (random weights from the config, pipeline tests only)."""

    name = BACKEND_NAME

    def check_model(self, spec: ModelSpec, cache_dir: str | None = None) -> None:
        """Fail before a run when the model cannot be had: no folder or cached repo, no
        config.json, an unsupported class, no processor, tokenizer or weights files.

        Raises:
            WeightsError: As above (one line saying how to supply the model).
            ConfigError: transformers is not installed.
        """
        require_transformers()
        folder = resolve_model_folder(spec, need_weights=True, cache_dir=cache_dir)
        get_family(read_model_config(folder.path), folder.where)
        if not any((folder.path / name).is_file() for name in _PROCESSOR_FILES):
            raise WeightsError(f"{folder.where} has no image processor ({' or '.join(_PROCESSOR_FILES)}); save it with "
                               "the model (processor.save_pretrained(folder))")
        if not any((folder.path / name).is_file() for name in _TOKENIZER_FILES):
            raise WeightsError(f"{folder.where} has no tokenizer files ({', '.join(_TOKENIZER_FILES)}); save the "
                               "tokenizer with the model (processor.save_pretrained(folder))")

    def get_input_size(self, spec: ModelSpec) -> tuple[int, int] | None:
        """(height, width) of the canvas from the processor config, or None when the model's files
        are not available without a download."""
        try:
            require_transformers()
            folder = resolve_model_folder(spec, need_weights=False, download=False)
            return create_input_geometry(load_image_processor(folder.path, folder.where), folder.where).size
        except (WeightsError, ConfigError):
            return None

    def get_geometry(self, spec: ModelSpec) -> InputGeometry:
        """The canvas and normalisation of the model's image processor (no weights are read).

        Raises:
            WeightsError: No processor, or one whose preprocessing typoattack cannot reproduce.
        """
        require_transformers()
        folder = resolve_model_folder(spec, need_weights=False)
        return create_input_geometry(load_image_processor(folder.path, folder.where), folder.where)

    def get_weights_id(self, spec: ModelSpec) -> str:
        """`hf:repo@commit` for a cached repo, `local:<content hash>` for a folder (`|seed:N` added
        for random weights)."""
        return get_weights_id(resolve_model_folder(spec, need_weights=True), spec)

    def get_default_templates(self, spec: ModelSpec) -> tuple[str, ...]:
        """The family's recommended templates (SigLIP, SigLIP 2: "This is a photo of {}."), or ()
        when the task's default applies."""
        folder = resolve_model_folder(spec, need_weights=False)
        return get_family(read_model_config(folder.path), folder.where).default_templates

    def load(self, spec: ModelSpec, device: torch.device, precision: Precision,
             compile: bool = False) -> TransformersModel:
        """Load the model in fp32 with SDPA attention (eager where a class has no SDPA), in eval
        mode on `device`.

        Raises:
            WeightsError: Missing or unloadable files, or weights that do not fill the model.
        """
        require_transformers()
        check_precision(precision, device)
        folder = resolve_model_folder(spec, need_weights=True)
        family = get_family(read_model_config(folder.path), folder.where)
        geometry = create_input_geometry(load_image_processor(folder.path, folder.where), folder.where)
        model = load_module(folder, family, spec).to(device).eval()
        return TransformersModel(spec, folder, family, model, geometry, device, precision,
                                 get_weights_id(folder, spec), compile=compile)

    def list_models(self) -> list[str]:
        """The supported transformers classes (a model is any folder or repo holding one)."""
        return list_family_names()

    def get_version(self) -> str:
        """transformers' version ("" when it is not installed)."""
        return get_transformers_version()


def load_module(folder: ModelFolder, family: Family, spec: ModelSpec) -> torch.nn.Module:
    """The torch module of a folder's model class in fp32 (random weights from the seed for `seed:N`).

    Raises:
        WeightsError: Unloadable files, or a checkpoint that leaves weights of the class missing
            or of another shape (transformers would only warn and initialise them at random).
    """
    import transformers

    cls = getattr(transformers, family.class_name)
    try:
        with quiet_loading():  # the CLI shows its own progress
            if is_untrained(spec.pretrained):
                config = transformers.AutoConfig.from_pretrained(str(folder.path), local_files_only=True)
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(int(str(spec.pretrained)[len(SEED_PREFIX):]))
                    return _with_attention(lambda impl: cls._from_config(config, attn_implementation=impl,
                                                                         dtype=torch.float32))
            model, info = _with_attention(lambda impl: cls.from_pretrained(
                str(folder.path), attn_implementation=impl, dtype=torch.float32, local_files_only=True,
                output_loading_info=True))
    except (OSError, ValueError, KeyError, RuntimeError, TypeError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise WeightsError(f"cannot load {family.class_name} from {folder.where}: {first[:300]}; {WEIGHTS_HELP}") from None
    missing = list(info.get("missing_keys", [])) + [str(k) for k in info.get("mismatched_keys", [])]
    if missing:
        raise WeightsError(f"the weights in {folder.where} do not fill a {family.class_name}: {len(missing)} tensors are "
                           f"missing or of another shape (e.g. {missing[0]}); is it a checkpoint of this class?")
    return model


def _with_attention(create):  # type: ignore[no-untyped-def]
    """create(\"sdpa\"), or create(\"eager\") for a class that has no SDPA attention."""
    try:
        return create("sdpa")
    except ValueError as e:
        if "sdpa" not in str(e).lower() and "attention implementation" not in str(e).lower():
            raise
        return create("eager")
