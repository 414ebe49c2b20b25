"""Where a transformers model's files are: a local `save_pretrained` folder, or a Hub repo id
resolved from the Hugging Face cache without the network (downloaded only when the Hub is reachable)."""

from __future__ import annotations

import functools
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from typoattack import hub
from typoattack.config.types import SEED_PREFIX, ModelSpec, is_untrained
from typoattack.errors import WeightsError
from typoattack.files import expand_path

WEIGHTS_HELP = ("supply the model with --model /path/to/folder (written by save_pretrained), or put it in the "
                "Hugging Face cache (HF_HOME) on a machine with network access, e.g. `hf download ORG/NAME`")
_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+|[A-Za-z0-9][\w.-]*")
# Files a model folder needs besides its weights (configs, tokenizer vocabularies).
_SMALL_FILES = ["*.json", "*.txt", "*.model", "*.tiktoken"]
_WEIGHT_SUFFIXES = (".safetensors", ".bin")


@dataclass(frozen=True)
class ModelFolder:
    """The files of one model.

    Attributes:
        path: A folder holding config.json, the processor and tokenizer files (and the weights).
        repo_id: The Hub repo id, or None for a local folder.
        commit: The commit hash of the cached snapshot (None for a local folder).
    """

    path: Path
    repo_id: str | None = None
    commit: str | None = None

    @property
    def where(self) -> str:
        """The repo id or the folder, for messages."""
        return self.repo_id or str(self.path)


def resolve_model_folder(spec: ModelSpec, need_weights: bool = True, download: bool = True,
                         cache_dir: str | None = None) -> ModelFolder:
    """The folder of a model: `spec.name` as a local folder, else as a Hub repo id in the cache.

    A repo id is looked up in the Hugging Face cache without any network access; only when it is
    missing (or lacks its weights) and huggingface.co is reachable is it downloaded (with `download`).
    `spec.pretrained` is a Hub revision (branch, tag or commit; default main), `seed:N` (random
    weights from the config, pipeline tests only) or None.

    Args:
        spec: The model.
        need_weights: The weights must be present too (not only config and processor files).
        download: Allow a download when the Hub is reachable.
        cache_dir: The Hugging Face hub cache (None: HF_HUB_CACHE).

    Raises:
        WeightsError: A missing folder, a name that is neither a folder nor a repo id, or a repo
            that is neither cached nor reachable (the message says how to supply it).
    """
    check_pretrained(spec)
    need_weights = need_weights and not is_untrained(spec.pretrained)
    folder = expand_path(spec.name)
    if folder.is_dir():
        if spec.pretrained and not is_untrained(spec.pretrained):
            raise WeightsError(f"--pretrained {spec.pretrained!r} means a Hub revision; a local folder "
                               f"({folder}) takes none")
        local = ModelFolder(folder.resolve())
        if need_weights:
            check_weights_present(local)
        return local
    if _looks_like_path(spec.name) or not _REPO_ID.fullmatch(spec.name):
        raise WeightsError(f"model folder {folder} does not exist; give a folder written by save_pretrained "
                           "or a Hub repo id such as openai/clip-vit-base-patch32")
    revision = None if is_untrained(spec.pretrained) else spec.pretrained
    cached = find_cached_snapshot(spec.name, revision, cache_dir)
    if cached is not None and (not need_weights or has_weights(cached.path)):
        return cached
    if cached is None and is_open_clip_model_name(spec.name):
        raise WeightsError(f"{spec.name} is an open_clip model name; drop --backend transformers (or pass "
                           "--backend open_clip)")
    import huggingface_hub.constants as hub_constants

    if download and not hub_constants.HF_HUB_OFFLINE and hub.is_hub_reachable():
        return download_snapshot(spec.name, revision, need_weights, cache_dir)
    what = "its weights are" if cached is not None else "it is"
    raise WeightsError(f"{spec.name}{'@' + revision if revision else ''}: {what} not in the Hugging Face cache "
                       f"and huggingface.co cannot be reached; {WEIGHTS_HELP}")


def is_open_clip_model_name(name: str) -> bool:
    """True when `name` is one of open_clip's model names (e.g. ViT-B-32), typoattack's own configs
    included: a name the user meant for the open_clip backend. Imports open_clip (asked only of a
    name that is neither a folder nor cached; a Hub id `ORG/NAME` is never one)."""
    from typoattack.backends.registry import get_backend

    if "/" in name:
        return False
    try:
        return name in get_backend("open_clip").list_models()
    except Exception:  # a broken open_clip install must not hide the error this hint adds to
        return False


def check_pretrained(spec: ModelSpec) -> None:
    """Raise WeightsError for a malformed `seed:N`."""
    if is_untrained(spec.pretrained):
        digits = str(spec.pretrained)[len(SEED_PREFIX):]
        if not (digits.isascii() and digits.isdigit()):
            raise WeightsError(f"pretrained {spec.pretrained!r}: write seed:N with an integer N, e.g. seed:0")


def find_cached_snapshot(repo_id: str, revision: str | None, cache_dir: str | None = None) -> ModelFolder | None:
    """The cached snapshot of a repo at a revision (None when it or its config.json is not cached).
    Never touches the network."""
    from huggingface_hub import snapshot_download

    try:
        path = Path(snapshot_download(repo_id, revision=revision, cache_dir=cache_dir, local_files_only=True))
    except (OSError, ValueError):  # LocalEntryNotFoundError and malformed ids
        return None
    if not (path / "config.json").is_file():
        return None
    return ModelFolder(path, repo_id, path.name)


def download_snapshot(repo_id: str, revision: str | None, need_weights: bool,
                      cache_dir: str | None = None) -> ModelFolder:
    """Download a repo's config, processor and tokenizer files (and the weights the model class
    loads: the safetensors files when there are any, else the PyTorch .bin files) into the cache.

    Raises:
        WeightsError: The repo or revision does not exist, or the download fails.
    """
    from huggingface_hub import HfApi, snapshot_download

    try:
        files = HfApi().list_repo_files(repo_id, revision=revision)
        patterns = list(_SMALL_FILES)
        if need_weights:
            safetensors = [f for f in files if f.endswith(".safetensors") and "/" not in f
                           and not f.startswith("open_clip")]
            patterns += safetensors or [f for f in files if f.endswith(".bin") and "/" not in f
                                        and not f.startswith("open_clip")]
        path = Path(snapshot_download(repo_id, revision=revision, cache_dir=cache_dir, allow_patterns=patterns))
    except Exception as e:  # huggingface_hub raises many kinds (HTTP, repo and revision not found)
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise WeightsError(f"cannot download {repo_id} from the Hub: {first[:300]}; {WEIGHTS_HELP}") from None
    folder = ModelFolder(path, repo_id, path.name)
    if need_weights:
        check_weights_present(folder)
    return folder


def has_weights(path: Path) -> bool:
    """True when a model folder holds weight files (safetensors or PyTorch .bin, sharded or not)."""
    return any(f.suffix in _WEIGHT_SUFFIXES and not f.name.startswith("open_clip") for f in path.iterdir()
               if f.is_file())


def check_weights_present(folder: ModelFolder) -> None:
    """Raise WeightsError when the folder holds no weights file."""
    if not has_weights(folder.path):
        raise WeightsError(f"{folder.where} ({folder.path}) holds no weights (model*.safetensors or "
                           f"pytorch_model*.bin); {WEIGHTS_HELP}")


def get_weights_id(folder: ModelFolder, spec: ModelSpec) -> str:
    """A string that changes whenever the model's files change: `repo@commit` for a cached repo,
    a content hash of every file for a local folder (weights, config, tokenizer, processor)."""
    seed = f"|{spec.pretrained}" if is_untrained(spec.pretrained) else ""
    if folder.repo_id is not None:
        return f"hf:{folder.repo_id}@{folder.commit}{seed}"
    files = sorted(f for f in folder.path.iterdir() if f.is_file())
    if seed:  # random weights: only the config matters
        files = [f for f in files if f.suffix not in _WEIGHT_SUFFIXES]
    stamp = tuple((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files)
    return f"local:{_hash_files(folder.path, stamp)}{seed}"


@functools.lru_cache(maxsize=32)
def _hash_files(path: Path, stamp: tuple[tuple[str, int, int], ...]) -> str:
    """sha256 over the names and contents of the files in `stamp` (memoised by name, size and mtime)."""
    digest = hashlib.sha256()
    for name, _, _ in stamp:
        digest.update(name.encode() + b"\0")
        with open(path / name, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                digest.update(block)
    return digest.hexdigest()[:20]


def _looks_like_path(name: str) -> bool:
    return name.startswith(("/", ".", "~")) or name.endswith("/") or name.count("/") > 1 or "\\" in name
