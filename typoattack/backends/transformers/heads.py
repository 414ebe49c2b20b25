"""Attention-head ablation in a transformers vision tower (CLIP and the CLIP-style towers of
MetaCLIP 2, AltCLIP and ChineseCLIP; SigLIP, SigLIP 2), by hooks on
each layer's attention: the heads' outputs are zeroed before the out-projection, where the
concatenated head outputs [B, L, heads * head_dim] enter it.

What is zeroed:
- CLIP-style towers (a class token at position 0 is the pooled output): the class token's output
  of each chosen head, as open_clip's head ablation (Dyslexify's `cls` mode); patch tokens keep it.
- SigLIP towers have no class token: a learned probe pools all patch tokens (the MAP head, its own
  attention after the last layer). The analogue of "the head's contribution to what is pooled" is
  the head's output at every position, so it is zeroed at all positions; the MAP head itself is
  not ablated (it is not a layer of the (layers, heads) grid).

Recording (find-heads): each record's `weights` is float32 [B, heads, L] attention of the layer.
CLIP: the class token's attention over all L tokens (token 0 the class token, `first_patch` 1).
SigLIP: the attention averaged over the query positions (the real patches; NaFlex padding left
out), over the L patch tokens (`first_patch` 0): there is no class token to read.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Protocol

import torch
from torch import nn

from typoattack.backends.base import Head, HeadRecord
from typoattack.backends.transformers.families import Family, VisionKind
from typoattack.config.types import ModelSpec
from typoattack.errors import ConfigError


class VisionTowerModel(Protocol):
    """What head ablation reads of a loaded model (a `model.TransformersModel`)."""

    spec: ModelSpec
    model: nn.Module
    model_family: Family

    @property
    def family(self) -> str:
        """A short description of the architecture for messages."""
        ...


class TowerHeadRecord(HeadRecord):
    """A HeadRecord that says where the patch tokens start in `weights`.

    Attributes:
        first_patch: Index of the first patch token along L (1 after CLIP's class token, 0 for SigLIP).
    """

    def __init__(self, first_patch: int) -> None:
        self.first_patch = first_patch
        self.weights: torch.Tensor | None = None


def get_attention_layers(zsm: VisionTowerModel) -> list[nn.Module]:
    """The self-attention module of every vision layer, checked to be splittable per head.

    Raises:
        ConfigError: The family's tower has no per-head hooks (e.g. ALIGN's EfficientNet).
    """
    kind = zsm.model_family.vision
    layers = getattr(getattr(getattr(zsm.model, "vision_model", None), "encoder", None), "layers", None)
    if kind is VisionKind.OTHER or layers is None:
        raise ConfigError(f"head ablation is not supported for {zsm.family} ({zsm.spec.label}): only CLIP and "
                          "SigLIP vision transformers")
    attentions = []
    for layer in layers:
        attn = getattr(layer, "self_attn", None)
        if attn is None or not all(isinstance(getattr(attn, n, None), nn.Linear)
                                   for n in ("q_proj", "k_proj", "v_proj", "out_proj")):
            raise ConfigError(f"head ablation needs q/k/v/out projections in every vision layer; {zsm.family} "
                              f"({zsm.spec.label}) has {type(attn).__name__}")
        attentions.append(attn)
    return attentions


def get_head_grid(zsm: VisionTowerModel) -> tuple[int, int]:
    """(layers, heads per layer) of the vision tower.

    Raises:
        ConfigError: Unsupported tower.
    """
    attentions = get_attention_layers(zsm)
    return len(attentions), int(attentions[0].num_heads)


def get_patch_size(zsm: VisionTowerModel) -> int:
    """Side in canvas pixels of one patch.

    Raises:
        ConfigError: The tower has no patch grid.
    """
    size = getattr(getattr(zsm.model.config, "vision_config", None), "patch_size", None)
    if zsm.model_family.vision is VisionKind.OTHER or not isinstance(size, int):
        raise ConfigError(f"{zsm.family} ({zsm.spec.label}) has no patch grid")
    return size


@contextmanager
def ablate_heads(zsm: VisionTowerModel, heads: Sequence[Head], record: bool = False
                 ) -> Iterator[list[HeadRecord]]:
    """Within the block, the vision tower runs with `heads` ((layer, head) pairs) ablated (see the
    module docstring). With `record`, every layer is hooked and the yielded records (one per
    layer) hold the attention of the last forward pass; otherwise the list holds one record per
    hooked layer. The hooks are removed on exit.

    Raises:
        ConfigError: Unsupported tower or a head out of range.
    """
    attentions = get_attention_layers(zsm)
    n_layers, n_heads = len(attentions), int(attentions[0].num_heads)
    by_layer: dict[int, list[int]] = {}
    for layer, head in heads:
        if not (0 <= layer < n_layers and 0 <= head < n_heads):
            raise ConfigError(f"head {layer}.{head} does not exist in {zsm.family} ({zsm.spec.label}), whose vision "
                              f"tower has layers 0-{n_layers - 1} with heads 0-{n_heads - 1}")
        by_layer.setdefault(layer, []).append(head)
    class_token = zsm.model_family.vision is VisionKind.CLASS_TOKEN
    handles = []
    records: list[HeadRecord] = []
    try:
        for i in (range(n_layers) if record else sorted(by_layer)):
            attn = attentions[i]
            if by_layer.get(i):
                handles.append(attn.out_proj.register_forward_pre_hook(
                    _create_zero_hook(by_layer[i], int(attn.head_dim), class_token)))
            entry = TowerHeadRecord(first_patch=1 if class_token else 0)
            if record:
                handles.append(attn.register_forward_pre_hook(_create_record_hook(attn, entry, class_token),
                                                              with_kwargs=True))
            records.append(entry)
        yield records
    finally:
        for handle in handles:
            handle.remove()


def _create_zero_hook(heads: list[int], head_dim: int, class_token: bool) -> Any:
    """A forward pre-hook on `out_proj` that zeroes the columns of `heads` (at position 0 only
    for a class-token tower)."""
    columns = torch.cat([torch.arange(h * head_dim, (h + 1) * head_dim) for h in heads])

    def hook(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        x = args[0]  # [B, L, heads * head_dim]
        keep = torch.ones(x.shape[-1], dtype=x.dtype, device=x.device)
        keep[columns.to(x.device)] = 0
        x = torch.cat([x[:, :1] * keep, x[:, 1:]], dim=1) if class_token else x * keep
        return (x, *args[1:])

    return hook


def _create_record_hook(attn: nn.Module, entry: TowerHeadRecord, class_token: bool) -> Any:
    """A forward pre-hook (with kwargs) on a self-attention module that recomputes its attention
    weights in fp32 from its input and keeps them in `entry.weights`."""

    def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        hidden = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
        mask = kwargs.get("attention_mask", args[1] if len(args) > 1 else None)
        b, length, _ = hidden.shape
        heads, head_dim = int(attn.num_heads), int(attn.head_dim)
        q = attn.q_proj(hidden).float().view(b, length, heads, head_dim).transpose(1, 2)
        k = attn.k_proj(hidden).float().view(b, length, heads, head_dim).transpose(1, 2)
        scores = (q[:, :, :1] if class_token else q) @ k.transpose(-1, -2) * float(attn.scale)  # [B, H, Q, L]
        valid = torch.ones(b, length, dtype=torch.bool, device=hidden.device)
        if mask is not None:  # [B, 1, Q, L]: bool (True = attend) or additive
            allowed = mask if mask.dtype == torch.bool else mask == 0
            valid = allowed[:, 0, -1, :].expand(b, length)
            scores = scores.masked_fill(~valid[:, None, None, :], float("-inf"))
        weights = scores.softmax(dim=-1)
        if class_token:
            entry.weights = weights[:, :, 0]
        else:
            share = valid.float() / valid.float().sum(dim=1, keepdim=True)  # mean over real query positions
            entry.weights = (weights * share[:, None, :, None]).sum(dim=2)

    return hook
