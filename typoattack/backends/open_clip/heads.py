"""Attention-head ablation in the vision tower: zero the class-token output of chosen heads.

In block `layer` of `model.visual.transformer.resblocks`, the attention output of head h at
query position 0 (the class token), before the out-projection, is set to zero (Dyslexify's `cls`
mode: `attn_output[:, h, 0, :] = 0`); every other head and token is computed as usual.

Supported: open_clip `VisionTransformer` towers whose blocks are `ResidualAttentionBlock` with a
`torch.nn.MultiheadAttention` self-attention and a class token at position 0 (the OpenAI, LAION,
DataComp, MetaCLIP and typoattack ViT-*/B/L/H/g configs). Not supported: ResNet towers
(`ModifiedResNet`), timm towers, and blocks with custom attention (`CustomResidualAttentionBlock`,
e.g. ViTs with qk-norm or scaled cosine attention); they raise ConfigError.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from typoattack.errors import ConfigError


class HeadAblatedAttention(nn.Module):
    """Wraps a block's `nn.MultiheadAttention`: same weights, same output, except that the class
    token's output of `heads` is zero. With `record` set, it also keeps the class token's
    attention weights over all tokens.

    Attributes:
        inner: The wrapped attention (its parameters are used as they are).
        heads: Head indices to zero at query position 0.
        record: Keep `weights` on each call.
        weights: float32 [B, n_heads, L] class-token attention of the last call (when recording).
    """

    first_patch = 1
    """Token 0 is the class token; the patches follow."""

    def __init__(self, inner: nn.MultiheadAttention, heads: Sequence[int], record: bool = False) -> None:
        super().__init__()
        self.inner, self.heads, self.record = inner, list(heads), record
        self.weights: torch.Tensor | None = None

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, need_weights: bool = False,
                attn_mask: torch.Tensor | None = None, **_: object) -> tuple[torch.Tensor, None]:
        """(output like `query`, None): [B, L, D] (batch_first) or [L, B, D] tokens in, the same out."""
        mha = self.inner
        x = query if mha.batch_first else query.transpose(0, 1)
        b, n, d = x.shape
        h = mha.num_heads
        qkv = F.linear(x, mha.in_proj_weight, mha.in_proj_bias).view(b, n, 3, h, d // h)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each [B, H, L, d_head]
        if self.record:
            scores = (q[:, :, :1].float() @ k.float().transpose(-1, -2)) / (d // h) ** 0.5  # [B, H, 1, L]
            if attn_mask is not None:
                scores = scores + attn_mask[:1].float()
            self.weights = scores.softmax(-1)[:, :, 0]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)  # [B, H, L, d_head]
        if self.heads:
            keep = torch.ones(1, h, n, 1, dtype=out.dtype, device=out.device)
            keep[:, self.heads, 0] = 0
            out = out * keep
        out = F.linear(out.transpose(1, 2).reshape(b, n, d), mha.out_proj.weight, mha.out_proj.bias)
        return (out if mha.batch_first else out.transpose(0, 1)), None


def get_head_grid(model: nn.Module) -> tuple[int, int]:
    """(layers, heads per layer) of the model's vision tower.

    Raises:
        ConfigError: The tower is not a supported ViT (see the module docstring).
    """
    blocks = _get_blocks(model)
    return len(blocks), blocks[0].attn.num_heads


def check_heads(model: nn.Module, heads: Sequence[tuple[int, int]], label: str) -> None:
    """Raise ConfigError unless every (layer, head) exists in the model's vision tower."""
    layers, per_layer = get_head_grid(model)
    for layer, head in heads:
        if layer >= layers or head >= per_layer:
            raise ConfigError(f"defence {label}: head {layer}.{head} does not exist in {_name(model)}, whose vision "
                              f"tower has layers 0-{layers - 1} with heads 0-{per_layer - 1}")


@contextmanager
def ablate_heads(model: nn.Module, heads: Sequence[tuple[int, int]], record: bool = False
                 ) -> Iterator[list[HeadAblatedAttention]]:
    """Within the block, the vision tower runs with the class-token output of `heads` zeroed.

    With `record`, every block is wrapped (heads or not) and the yielded wrappers, one per
    layer, hold the class-token attention weights of the last forward pass; otherwise only the
    blocks of `heads` are wrapped and the list holds those. The original modules come back on exit.

    Raises:
        ConfigError: Unsupported tower or a head out of range.
    """
    check_heads(model, heads, "heads:" + ",".join(f"{a}.{b}" for a, b in heads))
    blocks = _get_blocks(model)
    by_layer: dict[int, list[int]] = {}
    for layer, head in heads:
        by_layer.setdefault(layer, []).append(head)
    layers = range(len(blocks)) if record else sorted(by_layer)
    originals = {i: blocks[i].attn for i in layers}
    wrappers = []
    try:
        for i in layers:
            wrapper = HeadAblatedAttention(originals[i], by_layer.get(i, []), record)
            blocks[i].attn = wrapper
            wrappers.append(wrapper)
        yield wrappers
    finally:
        for i, attn in originals.items():
            blocks[i].attn = attn


def _name(model: nn.Module) -> str:
    return type(getattr(model, "visual", model)).__name__


def _get_blocks(model: nn.Module) -> list[nn.Module]:
    visual = getattr(model, "visual", None)
    transformer = getattr(visual, "transformer", None)
    blocks = getattr(transformer, "resblocks", None)
    if visual is None or blocks is None or getattr(visual, "class_embedding", None) is None:
        raise ConfigError(f"head ablation needs an open_clip ViT vision tower with a class token; this model's is "
                          f"{_name(model)} (ResNet and timm towers are not supported)")
    for block in blocks:
        attn = getattr(block, "attn", None)
        if not isinstance(attn, (nn.MultiheadAttention, HeadAblatedAttention)) or (
                isinstance(attn, nn.MultiheadAttention) and (not attn._qkv_same_embed_dim or attn.bias_k is not None)):
            raise ConfigError(f"head ablation needs attention that can be split per head (nn.MultiheadAttention); "
                              f"the vision blocks of this model are {type(block).__name__} with "
                              f"{type(attn).__name__}")
    return list(blocks)
