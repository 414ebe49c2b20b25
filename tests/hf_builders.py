"""Tiny random transformers image-text models, saved the way Hub folders are (save_pretrained:
config.json, model.safetensors, the image processor and the tokenizer), built offline.

- CLIP: CLIPTokenizer over open_clip's own BPE vocabulary (the OpenAI one, converted to vocab and
  merges), CLIPImageProcessor.
- SigLIP (fixed resolution) and SigLIP 2 NaFlex: a byte-pair tokenizer trained here with
  `tokenizers` on the ImageNet class names and the templates, wrapped as SigLIP 2's Gemma
  tokenizer (the fixed-resolution SigLIP 2 checkpoints are SiglipModel + Gemma tokenizer);
  SiglipImageProcessor / Siglip2ImageProcessor.
- An open_clip ViT's weights converted to a CLIPModel (the same checkpoint in both formats).
"""

from __future__ import annotations

import functools
import gzip
import json
import math
from pathlib import Path
from typing import Any

import torch

IMAGE_SIZE = 64
PATCH = 16
WIDTH = 32
SIGLIP_CONTEXT = 64
# Prompts the test tokenizers must cover (the SigLIP one is trained on them plus the class names).
CORPUS_TEMPLATES = ("a photo of a {}.", "This is a photo of {}.", "a photo of a * {}.", "a bad photo of the {}.")


@functools.cache
def get_clip_vocabulary() -> tuple[dict[str, int], tuple[tuple[str, str], ...]]:
    """(vocab, merges) of OpenAI CLIP's BPE, from the file open_clip ships, in CLIP's token order:
    256 byte characters, the same with `</w>`, one token per merge, then the start and end tokens
    (49,408 tokens)."""
    from open_clip.tokenizer import bytes_to_unicode, default_bpe

    lines = gzip.open(default_bpe()).read().decode("utf-8").split("\n")
    merges = tuple(tuple(line.split()) for line in lines[1:49152 - 256 - 2 + 1])
    tokens = list(bytes_to_unicode().values())
    tokens += [t + "</w>" for t in tokens]
    tokens += ["".join(m) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {t: i for i, t in enumerate(tokens)}, merges  # type: ignore[return-value]


def create_clip_tokenizer() -> Any:
    """A CLIPTokenizer with OpenAI CLIP's vocabulary."""
    from transformers import CLIPTokenizer

    vocab, merges = get_clip_vocabulary()
    return CLIPTokenizer(vocab=dict(vocab), merges=list(merges), model_max_length=77)


@functools.cache
def get_siglip_vocabulary() -> tuple[dict[str, int], tuple[tuple[str, str], ...]]:
    """(vocab, merges) of a byte-pair model trained with SigLIP 2's normalisation (lowercase,
    spaces as ▁) on the ImageNet class names in the test prompts; ids 0-4 are Gemma's pad, eos,
    bos, unk and mask."""
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>", fuse_unk=True))
    tokenizer.normalizer = normalizers.Sequence([normalizers.Lowercase(), normalizers.Replace(" ", "\u2581")])
    # Training only: no merge crosses a word start (as sentencepiece's), so the Gemma tokenizer,
    # which has no pre-tokenizer, splits words as the vocabulary was learned.
    tokenizer.pre_tokenizer = pre_tokenizers.Split("\u2581", behavior="merged_with_next")
    corpus = [t.format(c) for c in IMAGENET_CLASSNAMES for t in CORPUS_TEMPLATES]
    trainer = trainers.BpeTrainer(vocab_size=1500, special_tokens=["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"],
                                  show_progress=False)
    tokenizer.train_from_iterator(corpus, trainer=trainer)
    model = json.loads(tokenizer.to_str())["model"]
    merges = tuple(tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"])
    return dict(model["vocab"]), merges  # type: ignore[return-value]


def create_siglip_tokenizer(naflex: bool = False) -> Any:
    """SigLIP 2's tokenizer class (GemmaTokenizer; Siglip2Tokenizer for NaFlex, which lowercases)
    over the trained vocabulary, padding on the right with the end token appended, as SigLIP
    pools the last position."""
    from transformers import GemmaTokenizer, Siglip2Tokenizer

    vocab, merges = get_siglip_vocabulary()
    cls = Siglip2Tokenizer if naflex else GemmaTokenizer
    return cls(vocab=dict(vocab), merges=list(merges), model_max_length=SIGLIP_CONTEXT, padding_side="right",
               add_bos_token=False, add_eos_token=True)


def build_clip_folder(folder: Path, seed: int = 0, hidden_act: str = "quick_gelu") -> Path:
    """A tiny random CLIPModel (64 px, patch 16, width 32, 2 layers x 2 heads) with its processor."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    tower = dict(hidden_size=WIDTH, intermediate_size=2 * WIDTH, num_hidden_layers=2, num_attention_heads=2,
                 hidden_act=hidden_act)
    config = CLIPConfig(
        text_config=dict(tower, vocab_size=49408, max_position_embeddings=77, bos_token_id=49406,
                         eos_token_id=49407, pad_token_id=49407),
        vision_config=dict(tower, image_size=IMAGE_SIZE, patch_size=PATCH),
        projection_dim=WIDTH, architectures=["CLIPModel"])
    model = _create_seeded(CLIPModel, config, seed)
    processor = CLIPProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": IMAGE_SIZE},
                                                                 crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}),
                              tokenizer=create_clip_tokenizer())
    return _save(folder, model, processor)


def build_clip_tiny224_folder(folder: Path, seed: int = 0) -> Path:
    """A CLIPModel of the shape of open_clip's `typoattack-tiny` (224 px, patch 32, width 64, 2 layers
    x 2 heads, embedding 64) with random weights and OpenAI CLIP's processor settings: the same model
    size through both backends, for speed checks."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    tower = dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=2)
    config = CLIPConfig(
        text_config=dict(tower, vocab_size=49408, max_position_embeddings=77, bos_token_id=49406,
                         eos_token_id=49407, pad_token_id=49407),
        vision_config=dict(tower, image_size=224, patch_size=32),
        projection_dim=64, architectures=["CLIPModel"])
    model = _create_seeded(CLIPModel, config, seed)
    processor = CLIPProcessor(image_processor=CLIPImageProcessor(), tokenizer=create_clip_tokenizer())
    return _save(folder, model, processor)


def build_clip_vit_b32_folder(folder: Path, seed: int = 0) -> Path:
    """A CLIPModel of ViT-B/32's shape (CLIPConfig's defaults: 224 px, patch 32, width 768, 12 layers;
    text width 512) with random weights and OpenAI CLIP's processor settings, for speed checks."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    config = CLIPConfig(text_config=dict(bos_token_id=49406, eos_token_id=49407, pad_token_id=49407),
                        architectures=["CLIPModel"])
    model = _create_seeded(CLIPModel, config, seed)
    processor = CLIPProcessor(image_processor=CLIPImageProcessor(), tokenizer=create_clip_tokenizer())
    return _save(folder, model, processor)


def build_siglip_folder(folder: Path, seed: int = 0) -> Path:
    """A tiny random SiglipModel (64 px fixed resize, patch 16, width 32, 2 layers x 2 heads, MAP
    head), with a SigLIP 2 tokenizer, logit scale 10 and bias -2."""
    from transformers import SiglipConfig, SiglipImageProcessor, SiglipModel, SiglipProcessor

    config = SiglipConfig(text_config=_siglip_text_config(),
                          vision_config=dict(_siglip_tower(), image_size=IMAGE_SIZE, patch_size=PATCH),
                          architectures=["SiglipModel"])
    model = _create_seeded(SiglipModel, config, seed)
    processor = SiglipProcessor(image_processor=SiglipImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}),
                                tokenizer=create_siglip_tokenizer())
    return _save(folder, model, processor)


def build_siglip2_folder(folder: Path, seed: int = 0, max_num_patches: int = 16) -> Path:
    """A tiny random Siglip2Model (NaFlex, patch 16, at most `max_num_patches` patches, width 32,
    2 layers x 2 heads), logit scale 10 and bias -2."""
    from transformers import Siglip2Config, Siglip2ImageProcessor, Siglip2Model, Siglip2Processor

    config = Siglip2Config(text_config=_siglip_text_config(),
                           vision_config=dict(_siglip_tower(), patch_size=PATCH, num_patches=16),
                           architectures=["Siglip2Model"])
    model = _create_seeded(Siglip2Model, config, seed)
    processor = Siglip2Processor(image_processor=Siglip2ImageProcessor(patch_size=PATCH, max_num_patches=max_num_patches),
                                 tokenizer=create_siglip_tokenizer(naflex=True))
    return _save(folder, model, processor)


def _siglip_tower() -> dict[str, Any]:
    return dict(hidden_size=WIDTH, intermediate_size=2 * WIDTH, num_hidden_layers=2, num_attention_heads=2)


def _siglip_text_config() -> dict[str, Any]:
    vocab, _ = get_siglip_vocabulary()
    return dict(_siglip_tower(), vocab_size=len(vocab), max_position_embeddings=SIGLIP_CONTEXT,
                pad_token_id=0, bos_token_id=2, eos_token_id=1)


def _create_seeded(cls: Any, config: Any, seed: int) -> torch.nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = cls(config).eval()
        if hasattr(model, "logit_bias"):  # SigLIP initialises scale and bias to 0; give them values
            with torch.no_grad():
                model.logit_scale.fill_(math.log(10.0))
                model.logit_bias.fill_(-2.0)
    return model


def _save(folder: Path, model: torch.nn.Module, processor: Any) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def convert_open_clip_to_hf(open_clip_model: torch.nn.Module, embed_dim: int, vision: dict[str, Any],
                            text: dict[str, Any], hidden_act: str = "gelu") -> Any:
    """A CLIPModel holding an open_clip ViT CLIP's weights (the standard tower layout).

    Args:
        open_clip_model: An open_clip `CLIP` with a `VisionTransformer` tower.
        embed_dim: Its embed_dim.
        vision: Its vision_cfg (image_size, layers, width, head_width, patch_size).
        text: Its text_cfg (context_length, vocab_size, width, heads, layers).
        hidden_act: `gelu` for open_clip's default nn.GELU, `quick_gelu` for QuickGELU models.
    """
    from transformers import CLIPConfig, CLIPModel

    config = CLIPConfig(
        text_config=dict(vocab_size=text["vocab_size"], hidden_size=text["width"], intermediate_size=4 * text["width"],
                         num_hidden_layers=text["layers"], num_attention_heads=text["heads"],
                         max_position_embeddings=text["context_length"], hidden_act=hidden_act,
                         bos_token_id=49406, eos_token_id=49407, pad_token_id=49407),
        vision_config=dict(hidden_size=vision["width"], intermediate_size=4 * vision["width"],
                           num_hidden_layers=vision["layers"], num_attention_heads=vision["width"] // vision["head_width"],
                           image_size=vision["image_size"], patch_size=vision["patch_size"], hidden_act=hidden_act),
        projection_dim=embed_dim, architectures=["CLIPModel"])
    model = CLIPModel(config).eval()
    src = open_clip_model.state_dict()
    dst: dict[str, torch.Tensor] = {
        "vision_model.embeddings.class_embedding": src["visual.class_embedding"],
        "vision_model.embeddings.position_embedding.weight": src["visual.positional_embedding"],
        "vision_model.embeddings.patch_embedding.weight": src["visual.conv1.weight"],
        "vision_model.pre_layrnorm.weight": src["visual.ln_pre.weight"],
        "vision_model.pre_layrnorm.bias": src["visual.ln_pre.bias"],
        "vision_model.post_layernorm.weight": src["visual.ln_post.weight"],
        "vision_model.post_layernorm.bias": src["visual.ln_post.bias"],
        "visual_projection.weight": src["visual.proj"].T,
        "text_model.embeddings.token_embedding.weight": src["token_embedding.weight"],
        "text_model.embeddings.position_embedding.weight": src["positional_embedding"],
        "text_model.final_layer_norm.weight": src["ln_final.weight"],
        "text_model.final_layer_norm.bias": src["ln_final.bias"],
        "text_projection.weight": src["text_projection"].T,
        "logit_scale": src["logit_scale"],
    }
    for prefix, target, layers in (("visual.transformer", "vision_model.encoder", vision["layers"]),
                                   ("transformer", "text_model.encoder", text["layers"])):
        for i in range(layers):
            s, d = f"{prefix}.resblocks.{i}", f"{target}.layers.{i}"
            for name, (w, b) in {"q_proj": (0, 0), "k_proj": (1, 1), "v_proj": (2, 2)}.items():
                dst[f"{d}.self_attn.{name}.weight"] = src[f"{s}.attn.in_proj_weight"].chunk(3)[w]
                dst[f"{d}.self_attn.{name}.bias"] = src[f"{s}.attn.in_proj_bias"].chunk(3)[b]
            pairs = {"self_attn.out_proj": "attn.out_proj", "layer_norm1": "ln_1", "layer_norm2": "ln_2",
                     "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj"}
            for hf, oc in pairs.items():
                dst[f"{d}.{hf}.weight"] = src[f"{s}.{oc}.weight"]
                dst[f"{d}.{hf}.bias"] = src[f"{s}.{oc}.bias"]
    missing, unexpected = model.load_state_dict(dst, strict=False)
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:
        raise AssertionError(f"conversion incomplete: missing {missing}, unexpected {unexpected}")
    return model


@functools.cache
def get_wordpiece_vocabulary() -> dict[str, int]:
    """A BERT WordPiece vocabulary trained here on the test prompts ([PAD] 0, [UNK] 1, [CLS] 2,
    [SEP] 3, [MASK] 4), for the BERT-tokenised families (ALIGN, ChineseCLIP, AltCLIP)."""
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(vocab_size=1500, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"],
                                        show_progress=False)
    tokenizer.train_from_iterator([t.format(c) for c in IMAGENET_CLASSNAMES for t in CORPUS_TEMPLATES], trainer=trainer)
    return dict(tokenizer.get_vocab())


def create_bert_tokenizer() -> Any:
    """A BertTokenizer over the trained WordPiece vocabulary."""
    from transformers import BertTokenizer

    return BertTokenizer(vocab=dict(get_wordpiece_vocabulary()), model_max_length=64)


def build_generic_folder(folder: Path, class_name: str, seed: int = 0) -> Path:
    """A tiny random model of one of the other image-text families (MetaClip2Model, AltCLIPModel,
    ChineseCLIPModel, AlignModel) with its family's image processor and a tokenizer built here
    (CLIP's BPE for MetaCLIP 2, the WordPiece one for the BERT/RoBERTa text towers)."""
    import transformers
    from transformers import CLIPImageProcessor, ChineseCLIPImageProcessor, EfficientNetImageProcessor

    tower = dict(hidden_size=WIDTH, intermediate_size=2 * WIDTH, num_hidden_layers=2, num_attention_heads=2)
    vit = dict(tower, image_size=IMAGE_SIZE, patch_size=PATCH)
    crop = {"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    clip_processor = CLIPImageProcessor(size={"shortest_edge": IMAGE_SIZE}, crop_size=crop)
    bert_text = dict(tower, vocab_size=len(get_wordpiece_vocabulary()), max_position_embeddings=80, pad_token_id=0)
    if class_name == "MetaClip2Model":
        config = transformers.MetaClip2Config(
            text_config=dict(tower, vocab_size=49408, max_position_embeddings=77, bos_token_id=49406,
                             eos_token_id=49407, pad_token_id=49407), vision_config=vit, projection_dim=WIDTH)
        image_processor, tokenizer = clip_processor, create_clip_tokenizer()
    elif class_name == "AltCLIPModel":
        config = transformers.AltCLIPConfig(text_config=dict(bert_text, project_dim=WIDTH), vision_config=vit,
                                            projection_dim=WIDTH)
        image_processor, tokenizer = clip_processor, create_bert_tokenizer()
    elif class_name == "ChineseCLIPModel":
        config = transformers.ChineseCLIPConfig(text_config=bert_text, vision_config=vit, projection_dim=WIDTH)
        image_processor = ChineseCLIPImageProcessor(size={"shortest_edge": IMAGE_SIZE}, crop_size=crop)
        tokenizer = create_bert_tokenizer()
    elif class_name == "AlignModel":
        vision = dict(image_size=IMAGE_SIZE, width_coefficient=1.0, depth_coefficient=0.1, hidden_dim=WIDTH, initializer_range=0.3,
                      in_channels=[32] + [8] * 6, out_channels=[8] * 6 + [WIDTH])  # std 0.3: activations survive
        config = transformers.AlignConfig(text_config=bert_text, vision_config=vision, projection_dim=WIDTH)
        # ALIGN's preprocessing: resize, centre crop, scale to [-1, 1] (rescale offset), no normalisation.
        image_processor = EfficientNetImageProcessor(size={"height": 72, "width": 72}, do_center_crop=True, crop_size=crop,
                                                     rescale_factor=1 / 127.5, rescale_offset=True, do_normalize=False,
                                                     include_top=False)
        tokenizer = create_bert_tokenizer()
    else:
        raise ValueError(class_name)
    config.architectures = [class_name]
    model = _create_seeded(getattr(transformers, class_name), config, seed)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    image_processor.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
