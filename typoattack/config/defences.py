"""Parsing of defence values (`--defence`, YAML `defences:`) into `DefenceSpec`.

Values:
    none                  no defence.
    heads:L.H,L.H,...     zero the class-token output of these attention heads of the vision tower.
    heads:@FILE           the same, heads read from a YAML list (as `typoattack find-heads` writes).
    prefix:PATH           Defense-Prefix: a learned token embedding (torch.save'd tensor or
                          Parameter of shape (D,) or (1, D), or a dict holding one) in the class
                          prompts "a photo of a * {c}." (the dataset's prompt in `real`).
    templates:NAME|FILE   zero-shot prompt templates (openai, simple or a YAML file).

What depends on the model (layer and head ranges, D, the tower family) is checked when the
model is loaded (by the backend, `typoattack.backends.base.ZeroShotModel`). Imports no model code.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from typoattack.errors import ConfigError
from typoattack.files import expand_path

NO_DEFENCE = "none"
PREFIX_BASELINE = "templates:photo"
"""What a Defense-Prefix defence is compared with: its own class prompt without the learned token
("a photo of a {}."), one template as the prefix has (not the run's template average)."""
_HEAD = re.compile(r"^\s*(\d+)\.(\d+)\s*$")
_FORMS = "none, heads:L.H,L.H (or heads:@FILE), prefix:PATH or templates:openai|simple|FILE"


class DefenceKind(str, Enum):
    """What a defence changes: nothing, the image tower (heads) or the text side (prefix, templates)."""

    NONE = "none"
    HEADS = "heads"
    PREFIX = "prefix"
    TEMPLATES = "templates"


@dataclass(frozen=True)
class DefenceSpec:
    """One defence of the sweep.

    Attributes:
        kind: What it changes.
        heads: (layer, head) pairs of the vision tower, sorted, for HEADS; else empty.
        path: The prefix tensor file (PREFIX) or the templates YAML file (TEMPLATES, when a file).
        templates: `openai`, `simple` or the templates file, for TEMPLATES; else empty.
    """

    kind: DefenceKind
    heads: tuple[tuple[int, int], ...] = ()
    path: str = ""
    templates: str = ""

    @property
    def text(self) -> str:
        """The canonical value (heads spelled out, files as absolute paths): what run configs store."""
        if self.kind is DefenceKind.HEADS:
            return "heads:" + ",".join(f"{layer}.{head}" for layer, head in self.heads)
        if self.kind is DefenceKind.PREFIX:
            return f"prefix:{self.path}"
        if self.kind is DefenceKind.TEMPLATES:
            return f"templates:{self.templates}"
        return NO_DEFENCE

    @property
    def label(self) -> str:
        """The value of the records' `defence` column: `text` with files shown by their name."""
        if self.kind is DefenceKind.PREFIX:
            return f"prefix:{Path(self.path).name}"
        if self.kind is DefenceKind.TEMPLATES and self.path:
            return f"templates:{Path(self.path).name}"
        return self.text

    @property
    def image_side(self) -> bool:
        """True when the defence changes the image encoder (the text classifier is reused)."""
        return self.kind is DefenceKind.HEADS


def parse_heads(text: str, where: str = "heads") -> tuple[tuple[int, int], ...]:
    """Sorted, distinct (layer, head) pairs of `L.H,L.H,...`.

    Raises:
        ConfigError: An item is not two non-negative integers joined by a dot, or the list is empty.
    """
    items = [t for t in text.split(",") if t.strip()]
    if not items:
        raise ConfigError(f"{where}: no heads given; write heads:L.H,L.H (e.g. heads:9.3,10.1)")
    pairs = []
    for item in items:
        m = _HEAD.match(item)
        if not m:
            raise ConfigError(f"{where}: {item.strip()!r} is not a head; write LAYER.HEAD with 0-based integers, "
                              "e.g. heads:9.3,10.1")
        pairs.append((int(m.group(1)), int(m.group(2))))
    return tuple(sorted(set(pairs)))


def load_heads_file(path: str | Path) -> tuple[tuple[int, int], ...]:
    """The heads of a YAML file: a list of `L.H` strings or [L, H] pairs, or a mapping whose
    `heads` key holds one (as `typoattack find-heads` writes).

    Raises:
        ConfigError: The file is missing, not YAML, or holds no such list.
    """
    # Imported here: config.types reads this module, and path helpers must load without yaml.
    from typoattack.config.parsing import read_yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"heads file {path} does not exist")
    doc: Any = read_yaml(path, "heads")
    if isinstance(doc, dict):
        doc = doc.get("heads")
    if not isinstance(doc, list) or not doc:
        raise ConfigError(f"heads file {path} must hold a non-empty list of heads (L.H or [L, H]), "
                          "or a mapping with `heads:`")
    texts = []
    for item in doc:
        if isinstance(item, list) and len(item) == 2 and all(isinstance(v, int) for v in item):
            texts.append(f"{item[0]}.{item[1]}")
        elif isinstance(item, str):
            texts.append(item)
        else:
            raise ConfigError(f"heads file {path}: {item!r} is not a head; write 'L.H' in quotes or [L, H] "
                              "(YAML reads an unquoted 1.10 as the number 1.1)")
    return parse_heads(",".join(texts), where=f"heads file {path}")


def _resolve(value: str, base: Path | None) -> str:
    p = expand_path(value)
    if not p.is_absolute() and base is not None:
        p = base / p
    return str(p.resolve())


def parse_defence(value: Any, base: Path | None = None) -> DefenceSpec:
    """Parse one defence value.

    Args:
        value: The text (see the module docstring).
        base: Folder that relative file paths are resolved against (the config file's); None for
            the working directory.

    Raises:
        ConfigError: Unknown form, bad heads, or a file that does not exist.
    """
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"defence {value!r} is not a defence; use {_FORMS}")
    text = value.strip()
    if text.lower() == NO_DEFENCE:
        return DefenceSpec(DefenceKind.NONE)
    kind, sep, arg = text.partition(":")
    arg = arg.strip()
    if not sep or kind.strip().lower() not in {k.value for k in DefenceKind} - {NO_DEFENCE}:
        raise ConfigError(f"defence {text!r} is not a defence; use {_FORMS}")
    kind = DefenceKind(kind.strip().lower())
    if not arg:
        raise ConfigError(f"defence {text!r} needs a value after `{kind.value}:`; use {_FORMS}")
    if kind is DefenceKind.HEADS:
        if arg.startswith("@"):
            return DefenceSpec(kind, heads=load_heads_file(_resolve(arg[1:], base)))
        return DefenceSpec(kind, heads=parse_heads(arg, where=f"defence {text!r}"))
    if kind is DefenceKind.TEMPLATES:
        from typoattack.config.types import BUILTIN_TEMPLATES

        if arg in BUILTIN_TEMPLATES:
            return DefenceSpec(kind, templates=arg)
        path = _resolve(arg, base)
        if not Path(path).is_file():
            raise ConfigError(f"defence {text!r}: templates file {path} does not exist (or use openai / simple)")
        return DefenceSpec(kind, path=path, templates=path)
    path = _resolve(arg, base)
    if not Path(path).is_file():
        raise ConfigError(f"defence {text!r}: prefix file {path} does not exist")
    return DefenceSpec(kind, path=path)


def parse_defences(values: Any, base: Path | None = None) -> tuple[DefenceSpec, ...]:
    """Parse a list of defence values (or one value).

    Raises:
        ConfigError: A value is bad, the list is empty, or two values name the same defence.
    """
    items = values if isinstance(values, (list, tuple)) else [values]
    if not items:
        raise ConfigError(f"`defences` is empty; give at least one of {_FORMS}")
    specs = tuple(parse_defence(v, base) for v in items)
    labels = [s.label for s in specs]
    dup = next((lb for lb in labels if labels.count(lb) > 1), None)
    if dup is not None:
        raise ConfigError(f"`defences` lists {dup!r} twice")
    return specs


def get_baseline(label: str, labels: set[str]) -> str:
    """The defence (`defence` column value) that `label` is compared with among `labels`: a prefix
    defence with PREFIX_BASELINE when the run has it, every other defence (and a prefix without it)
    with `none`."""
    if label.startswith(f"{DefenceKind.PREFIX.value}:") and PREFIX_BASELINE in labels:
        return PREFIX_BASELINE
    return NO_DEFENCE


def add_prefix_baseline(defences: tuple[str, ...]) -> tuple[str, ...]:
    """The defences with PREFIX_BASELINE appended when a prefix defence is among them and it is not."""
    if any(d.startswith(f"{DefenceKind.PREFIX.value}:") for d in defences) and PREFIX_BASELINE not in defences:
        return (*defences, PREFIX_BASELINE)
    return defences


def get_fingerprint_text(text: str) -> str:
    """A canonical defence text as the run fingerprint sees it: files by the SHA-256 of their
    contents, not their paths (moving a prefix file keeps a run resumable; editing it does not)."""
    spec = parse_defence(text)
    if spec.path and Path(spec.path).is_file():
        import hashlib

        return f"{spec.kind.value}:sha256:{hashlib.sha256(Path(spec.path).read_bytes()).hexdigest()}"
    return spec.text
