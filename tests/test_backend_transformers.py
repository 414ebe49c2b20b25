"""The transformers backend against transformers itself: canvases equal to the image processors'
on the 500 shipped images, zero-shot logits equal to transformers' own path, head ablation and
Defense-Prefix against hand computations, the Hub cache offline, the one-line errors, and one
open_clip checkpoint converted to a CLIPModel."""

from __future__ import annotations

import copy
import json
import pickle
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
import hf_builders  # noqa: E402

from typoattack.backends.base import build_logits, get_classifier  # noqa: E402
from typoattack.backends.registry import get_backend  # noqa: E402
from typoattack.backends.transformers import TransformersBackend, TransformersModel  # noqa: E402
from typoattack.backends.transformers.geometry import (  # noqa: E402
    create_input_geometry,
    get_naflex_size,
    resize_pixels,
)
from typoattack.config.types import ModelSpec, Precision  # noqa: E402
from typoattack.data.classes import IMAGENET_CLASSNAMES  # noqa: E402
from typoattack.data.sources import load_rgb  # noqa: E402
from typoattack.errors import ConfigError, WeightsError  # noqa: E402

CPU = torch.device("cpu")
TEMPLATES = ("a photo of a {}.", "This is a photo of {}.")
BUILDERS = {"clip": hf_builders.build_clip_folder, "siglip": hf_builders.build_siglip_folder,
            "siglip2": hf_builders.build_siglip2_folder}


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_torch_thread):
    """Every test of this module on one torch thread (conftest.one_torch_thread)."""


@pytest.fixture(scope="module")
def images(sample_dir) -> list[Image.Image]:
    """The 500 shipped images decoded to RGB (grayscale, CMYK and odd sizes included)."""
    return [load_rgb(sample_dir / name) for name in sorted(p.name for p in sample_dir.glob("*.JPEG"))]


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    """Tiny random CLIP, SigLIP and SigLIP 2 NaFlex models saved as Hub folders."""
    root = tmp_path_factory.mktemp("hf")
    return {name: build(root / name) for name, build in BUILDERS.items()}


@pytest.fixture(scope="module")
def models(folders) -> dict[str, TransformersModel]:
    backend = get_backend("transformers")
    return {name: backend.load(ModelSpec(str(folder), backend="transformers"), CPU, Precision.FP32)
            for name, folder in folders.items()}


def square_crop(image: Image.Image) -> Image.Image:
    side = min(image.size)
    left, top = (image.width - side) // 2, (image.height - side) // 2
    return image.crop((left, top, left + side, top + side))


def unpatchify(patches: np.ndarray, shape: tuple[int, int], patch: int) -> np.ndarray:
    """[rows*cols, p*p*3] patches (NaFlex layout) -> [rows*p, cols*p, 3] image."""
    rows, cols = shape
    return patches[:rows * cols].reshape(rows, cols, patch, patch, 3).transpose(0, 2, 1, 3, 4).reshape(
        rows * patch, cols * patch, 3)


# --- canvas geometry ------------------------------------------------------------------------

def _processors():
    from transformers import (
        CLIPImageProcessor,
        CLIPImageProcessorPil,
        EfficientNetImageProcessor,
        Siglip2ImageProcessor,
        SiglipImageProcessor,
    )

    return {
        "clip-224": CLIPImageProcessor(),  # openai/clip-vit-base-patch32's settings
        "clip-224-pil": CLIPImageProcessorPil(),
        "siglip-224": SiglipImageProcessor(),  # google/siglip-base-patch16-224's settings
        "siglip2-naflex-256": Siglip2ImageProcessor(),  # google/siglip2-base-patch16-naflex's settings
        "align-289": EfficientNetImageProcessor(size={"height": 346, "width": 346}, do_center_crop=True,
                                                crop_size={"height": 289, "width": 289}, rescale_factor=1 / 127.5,
                                                rescale_offset=True, do_normalize=False, include_top=False),
    }


@pytest.mark.parametrize("name", list(_processors()))
def test_canvas_equals_the_processors_resized_image(name, images) -> None:
    processor = _processors()[name]
    geometry = create_input_geometry(processor, name)
    transform = pickle.loads(pickle.dumps(geometry.transform))  # as decode workers receive it
    assert transform == geometry.transform
    naflex = name.startswith("siglip2")
    inputs = [square_crop(im) for im in images] if naflex else images
    raw = processor(images=inputs, do_rescale=False, do_normalize=False, return_tensors="np")
    full = processor(images=inputs[:50], return_tensors="np")  # the normalisation, on a tenth
    for i, image in enumerate(images):
        canvas = np.asarray(transform(image))
        assert canvas.shape == (*geometry.size, 3) and canvas.dtype == np.uint8
        if naflex:
            shape = tuple(raw["spatial_shapes"][i])
            expected = unpatchify(raw["pixel_values"][i], shape, processor.patch_size)
        else:
            expected = np.moveaxis(raw["pixel_values"][i], 0, -1)
        assert np.array_equal(expected, canvas), f"{name}: image {i} ({image.size}) differs from the processor"
        if i < 50:
            normalised = (unpatchify(full["pixel_values"][i], shape, processor.patch_size) if naflex
                          else np.moveaxis(full["pixel_values"][i], 0, -1))
            mine = (canvas / 255.0 - np.array(geometry.mean)) / np.array(geometry.std)
            assert np.abs(mine - normalised).max() < 1e-5
    if naflex:  # the processor leaves the canvas itself as it is
        again = processor(images=[geometry.transform(images[0])], do_rescale=False, do_normalize=False,
                          return_tensors="np")
        assert np.array_equal(unpatchify(again["pixel_values"][0], tuple(again["spatial_shapes"][0]), 16),
                              np.asarray(geometry.transform(images[0])))


def test_default_processor_is_torchvision_and_its_resize_is_not_pils(folders, images) -> None:
    # Why the canvas resize calls torchvision: AutoImageProcessor gives the torchvision processor,
    # and PIL's Image.resize differs from it on a few pixels.
    from typoattack.backends.transformers.geometry import load_image_processor

    for folder in folders.values():
        assert load_image_processor(folder, str(folder)).backend == "torchvision"
    torchvision_canvas = resize_pixels(images[0], (224, 298), 3, "torchvision")
    pil_canvas = resize_pixels(images[0], (224, 298), 3, "pil")
    assert not np.array_equal(torchvision_canvas, pil_canvas)
    assert np.abs(torchvision_canvas.astype(int) - pil_canvas.astype(int)).max() <= 3


# --- zero-shot parity -----------------------------------------------------------------------

def _reference(folder: Path, images: list[Image.Image], naflex: bool) -> torch.Tensor:
    """Logits of transformers' own path: the processor, get_image_features / get_text_features
    (eager attention), the pipeline's text settings, templates averaged as open_clip does."""
    from transformers import AutoModel, AutoProcessor

    model = AutoModel.from_pretrained(folder, attn_implementation="eager").eval()
    processor = AutoProcessor.from_pretrained(folder)
    siglip = "siglip" in model.config.model_type
    text_kwargs = dict(padding="max_length", max_length=64, truncation=True) if siglip else dict(padding=True)
    with torch.no_grad():
        texts = [t.format(name) for name in IMAGENET_CLASSNAMES for t in TEMPLATES]
        tokens = processor.tokenizer(texts, return_tensors="pt", **text_kwargs)
        per_text = F.normalize(model.get_text_features(**tokens).pooler_output, dim=-1)
        means = per_text.view(len(IMAGENET_CLASSNAMES), len(TEMPLATES), -1).mean(dim=1)
        classifier = F.normalize(means, dim=-1).T
        inputs = processor.image_processor(images=[square_crop(im) for im in images] if naflex else images,
                                           return_tensors="pt")
        features = F.normalize(model.get_image_features(**inputs).pooler_output, dim=-1)
        bias = model.logit_bias if siglip else 0.0
        return model.logit_scale.exp() * features @ classifier + bias


@pytest.mark.parametrize("name", list(BUILDERS))
def test_clean_logits_equal_transformers_own_zero_shot_path(name, folders, models, images) -> None:
    model = models[name]
    classifier = model.build_classifier(IMAGENET_CLASSNAMES, TEMPLATES)
    canvases = torch.from_numpy(np.stack([np.asarray(model.geometry.transform(im)) for im in images]))
    logits = build_logits(model, classifier, canvases)
    expected = _reference(folders[name], images, naflex=name == "siglip2")
    agreement = (logits.argmax(1) == expected.argmax(1)).float().mean().item()
    assert agreement >= 0.999, f"{name}: top-1 agreement {agreement:.4f}"
    assert (logits - expected).abs().max().item() < 1e-4
    assert len(set(expected.argmax(1).tolist())) > 5  # the random model is not constant


@pytest.mark.parametrize("name", list(BUILDERS))
def test_scores_equal_the_zero_shot_pipeline(name, folders, models, images) -> None:
    # The pipeline runs the model's forward (its own logit scale and bias, its own text settings)
    # with "This is a photo of {}."; NaFlex images keep their aspect ratio there (sizes path here).
    from transformers import pipeline

    pipe = pipeline("zero-shot-image-classification", model=str(folders[name]), device="cpu")
    labels = list(IMAGENET_CLASSNAMES[:12])
    model = models[name]
    classifier = model.build_classifier(labels, ("This is a photo of {}.",))
    for image in images[:4]:
        if name == "siglip2":
            h, w = get_naflex_size(image.height, image.width, 16, 16)
            canvas = torch.from_numpy(resize_pixels(image, (h, w), 2, "torchvision").copy())[None]
            features = model.encode_images(canvas, sizes=torch.tensor([[h, w]]))
            logits = model.logit_scale * features @ classifier + model.logit_bias
        else:
            canvas = torch.from_numpy(np.array(model.geometry.transform(image)))[None]
            logits = build_logits(model, classifier, canvas)
        scores = logits[0].sigmoid() if "siglip" in name else logits[0].softmax(-1)
        result = {r["label"]: r["score"] for r in pipe(image, candidate_labels=labels)}
        assert np.allclose([result[label] for label in labels], scores.numpy(), atol=1e-5)


def test_naflex_images_of_any_aspect_ratio_encode_like_the_processor(models, images) -> None:
    from transformers import AutoModel, AutoProcessor

    model = models["siglip2"]
    folder = model.folder.path
    chosen = images[:40]
    sizes = [get_naflex_size(im.height, im.width, 16, 16) for im in chosen]
    assert len(set(sizes)) > 1  # several aspect ratios
    height, width = max(s[0] for s in sizes), max(s[1] for s in sizes)
    batch = torch.zeros(len(chosen), height, width, 3, dtype=torch.uint8)
    processor = AutoProcessor.from_pretrained(folder).image_processor
    raw = processor(images=chosen, do_rescale=False, do_normalize=False, return_tensors="np")
    for i, (image, (h, w)) in enumerate(zip(chosen, sizes)):
        canvas = resize_pixels(image, (h, w), 2, "torchvision")
        assert np.array_equal(unpatchify(raw["pixel_values"][i], tuple(raw["spatial_shapes"][i]), 16), canvas)
        batch[i, :h, :w] = torch.from_numpy(canvas.copy())
    features = model.encode_images(batch, sizes=torch.tensor(sizes))
    reference = AutoModel.from_pretrained(folder, attn_implementation="eager").eval()
    with torch.no_grad():
        expected = F.normalize(reference.get_image_features(**processor(images=chosen, return_tensors="pt"))
                               .pooler_output, dim=-1)
    assert (features - expected).abs().max().item() < 1e-5
    with pytest.raises(ConfigError, match="whole 16-pixel patches"):
        model.encode_images(batch[:1], sizes=torch.tensor([[20, 16]]))


def test_text_settings_per_family(models) -> None:
    clip, siglip = models["clip"], models["siglip"]
    assert clip.text_kwargs == {"padding": True, "truncation": True, "max_length": 77}
    assert siglip.text_kwargs == {"padding": "max_length", "max_length": 64, "truncation": True}
    assert siglip.tokenize(["a photo of a tench."])["input_ids"].shape == (1, 64)
    # SigLIP pools the last position: padding changes its text features; CLIP's do not change.
    padded, short = (siglip.encode_texts(["a photo of a tench."]),
                     F.normalize(siglip.model.get_text_features(**siglip.tokenizer(["a photo of a tench."],
                                                                                   return_tensors="pt")).pooler_output,
                                 dim=-1))
    assert (padded - short).abs().max() > 1e-3
    one, two = clip.encode_texts(["a photo of a tench."]), clip.encode_texts(["a photo of a tench.", "a " * 30])
    assert torch.allclose(one[0], two[0], atol=1e-6)
    assert siglip.default_templates == ("This is a photo of {}.",) and clip.default_templates == ()
    backend = get_backend("transformers")
    assert backend.get_default_templates(siglip.spec) == ("This is a photo of {}.",)
    assert siglip.logit_bias == pytest.approx(-2.0) and siglip.logit_scale == pytest.approx(10.0)
    assert clip.logit_bias == 0.0


def test_classifier_cache_and_bf16(models, tmp_path, images) -> None:
    model = models["clip"]
    first, cached = get_classifier(model, IMAGENET_CLASSNAMES[:20], TEMPLATES, tmp_path)
    again, cached_again = get_classifier(model, IMAGENET_CLASSNAMES[:20], TEMPLATES, tmp_path)
    assert (cached, cached_again) == (False, True) and torch.equal(first, again)
    canvases = torch.from_numpy(np.stack([np.asarray(model.geometry.transform(im)) for im in images[:8]]))
    bf16 = copy.copy(model)
    bf16.precision = Precision.BF16
    assert F.cosine_similarity(bf16.encode_images(canvases), model.encode_images(canvases)).min() > 0.99


# --- heads ----------------------------------------------------------------------------------

def _vision_by_hand(model: torch.nn.Module, pixels: torch.Tensor, ablate: dict[int, list[int]],
                    class_token: bool, spatial_shapes: torch.Tensor | None = None) -> torch.Tensor:
    """L2-normalised image features computed layer by layer, with the heads' outputs zeroed by
    hand (class token only, or every position) before the out-projection."""
    vision = model.vision_model
    x = vision.embeddings(pixels) if spatial_shapes is None else vision.embeddings(pixels, spatial_shapes)
    if class_token:
        x = vision.pre_layrnorm(x)
    for i, layer in enumerate(vision.encoder.layers):
        attn, h = layer.self_attn, layer.layer_norm1(x)
        b, n, d = h.shape
        heads = attn.num_heads
        q, k, v = (proj(h).view(b, n, heads, d // heads).transpose(1, 2)
                   for proj in (attn.q_proj, attn.k_proj, attn.v_proj))
        out = (q @ k.transpose(-1, -2) * (d // heads) ** -0.5).softmax(-1) @ v  # [B, H, L, dh]
        for head in ablate.get(i, []):
            if class_token:
                out[:, head, 0] = 0
            else:
                out[:, head] = 0
        x = x + attn.out_proj(out.transpose(1, 2).reshape(b, n, d))
        x = x + layer.mlp(layer.layer_norm2(x))
    if class_token:
        return F.normalize(model.visual_projection(vision.post_layernorm(x[:, 0])), dim=-1)
    return F.normalize(vision.head(vision.post_layernorm(x)), dim=-1)


@pytest.mark.parametrize("name", list(BUILDERS))
def test_head_ablation_equals_a_hand_computation(name, models, images) -> None:
    model = models[name]
    assert model.get_head_grid() == (2, 2) and model.get_patch_size() == 16
    canvases = torch.from_numpy(np.stack([np.asarray(model.geometry.transform(im)) for im in images[:6]]))
    pixels = canvases.float().div(255).sub(torch.tensor(model.geometry.mean)).div(torch.tensor(model.geometry.std))
    if name == "siglip2":
        from typoattack.backends.transformers.model import build_naflex_inputs

        values, _, shapes = build_naflex_inputs(pixels, 16, 16)
        inputs: tuple = (values, shapes)
    else:
        inputs = (pixels.permute(0, 3, 1, 2), None)
    class_token = name == "clip"
    plain = model.encode_images(canvases)
    with torch.no_grad():
        assert (plain - _vision_by_hand(model.model, *inputs[:1], {}, class_token, inputs[1])).abs().max() < 1e-5
        for heads in ([(0, 1)], [(1, 0), (0, 0)], [(1, 1)]):
            with model.ablate_heads(heads):
                ablated = model.encode_images(canvases)
            by_layer: dict[int, list[int]] = {}
            for layer, head in heads:
                by_layer.setdefault(layer, []).append(head)
            expected = _vision_by_hand(model.model, inputs[0], by_layer, class_token, inputs[1])
            assert (ablated - expected).abs().max() < 1e-5, heads
            assert (ablated - plain).abs().max() > 1e-4  # the heads matter
    assert torch.equal(model.encode_images(canvases), plain)  # hooks removed
    with pytest.raises(ConfigError, match="head 2.0 does not exist"):
        with model.ablate_heads([(2, 0)]):
            pass


@pytest.mark.parametrize("name", ["clip", "siglip"])
def test_recorded_attention_equals_transformers_eager_attention(name, folders, models, images) -> None:
    from transformers import AutoModel

    model = models[name]
    canvases = torch.from_numpy(np.stack([np.asarray(model.geometry.transform(im)) for im in images[:4]]))
    with model.ablate_heads([], record=True) as records:
        model.encode_images(canvases)
    eager = AutoModel.from_pretrained(folders[name], attn_implementation="eager").eval()
    pixels = canvases.float().div(255).sub(torch.tensor(model.geometry.mean)).div(torch.tensor(model.geometry.std))
    with torch.no_grad():
        attentions = eager.vision_model(pixel_values=pixels.permute(0, 3, 1, 2), output_attentions=True).attentions
    assert len(records) == len(attentions) == 2
    for record, attention in zip(records, attentions):
        expected = attention[:, :, 0] if name == "clip" else attention.mean(dim=2)
        assert record.weights.shape == expected.shape and (record.weights - expected).abs().max() < 1e-5
        assert record.first_patch == (1 if name == "clip" else 0)


# --- Defense-Prefix -------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(BUILDERS))
def test_prefix_classifier_equals_a_model_whose_star_embedding_is_the_vector(name, models) -> None:
    from typoattack.backends.transformers.prefix import get_mark_token_ids

    model = models[name]
    assert model.get_text_width() == hf_builders.WIDTH
    vector = torch.randn(hf_builders.WIDTH, generator=torch.Generator().manual_seed(1))
    names = IMAGENET_CLASSNAMES[:30]
    built = model.build_prefix_classifier(names, vector, "a photo of a * {}.")
    edited = copy.copy(model)
    edited.model = copy.deepcopy(model.model)
    with torch.no_grad():
        edited.model.text_model.embeddings.token_embedding.weight[get_mark_token_ids(model.tokenizer)] = vector
    expected = edited.encode_texts([f"a photo of a * {c}." for c in names]).T
    assert built.shape == (hf_builders.WIDTH, 30) and (built - expected).abs().max() < 1e-5
    plain = model.encode_texts([f"a photo of a * {c}." for c in names]).T
    assert (built - plain).abs().max() > 1e-3
    with pytest.raises(ConfigError, match="keeps `\\*` as one token"):
        model.build_prefix_classifier(names, vector, "a photo of a {}.")
    with pytest.raises(ConfigError, match="D=7"):
        model.build_prefix_classifier(names, torch.zeros(7), "a photo of a * {}.")


# --- the same checkpoint in both formats ----------------------------------------------------

@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """typoattack-tiny (open_clip, seed:0) and the same weights as a CLIPModel folder."""
    from transformers import CLIPImageProcessor, CLIPProcessor

    from typoattack.constants import MODEL_CONFIGS_DIR
    from typoattack.backends.open_clip.model import TINY_MODEL, create_model

    open_clip_model = create_model(ModelSpec(TINY_MODEL, "seed:0"), CPU, Precision.FP32)
    cfg = json.loads((MODEL_CONFIGS_DIR / f"{TINY_MODEL}.json").read_text())
    folder = tmp_path_factory.mktemp("converted")
    hf_builders.convert_open_clip_to_hf(open_clip_model.model, cfg["embed_dim"], cfg["vision_cfg"],
                                        cfg["text_cfg"]).save_pretrained(folder)
    CLIPProcessor(image_processor=CLIPImageProcessor(), tokenizer=hf_builders.create_clip_tokenizer()).save_pretrained(folder)
    hf_model = get_backend("transformers").load(ModelSpec(str(folder), backend="transformers"), CPU, Precision.FP32)
    return open_clip_model, hf_model


def test_open_clip_checkpoint_converted_gives_the_same_model(converted, images, tmp_path) -> None:
    open_clip_model, hf_model = converted
    names = IMAGENET_CLASSNAMES[::4]
    open_clip_classifier, _ = get_classifier(open_clip_model, names, TEMPLATES, tmp_path)
    hf_classifier = hf_model.build_classifier(names, TEMPLATES)
    assert (open_clip_classifier - hf_classifier).abs().max() < 1e-5  # same tokens, same text tower
    canvases = torch.from_numpy(np.stack([np.asarray(open_clip_model.geometry.transform(im)) for im in images]))
    # open_clip's logits use a fixed scale of 100; compare at that scale on the same canvases.
    expected = build_logits(open_clip_model, open_clip_classifier, canvases)
    logits = build_logits(hf_model, hf_classifier, canvases) * (100.0 / hf_model.logit_scale)
    assert (logits - expected).abs().max() < 1e-3
    assert (logits.argmax(1) == expected.argmax(1)).all()


def test_open_clip_checkpoint_converted_prefix_matches_open_clip(converted, tmp_path) -> None:
    from typoattack.defences.apply import get_prefix_classifier
    from typoattack.defences.prefix import PREFIX_PROMPT

    open_clip_model, hf_model = converted
    vector = torch.randn(hf_model.get_text_width(), generator=torch.Generator().manual_seed(2))
    torch.save(vector, tmp_path / "prefix.pt")
    names = IMAGENET_CLASSNAMES[:40]
    expected, _ = get_prefix_classifier(open_clip_model, names, tmp_path / "prefix.pt", tmp_path)
    assert (hf_model.build_prefix_classifier(names, vector, PREFIX_PROMPT) - expected).abs().max() < 1e-5


# --- folders, the Hub cache and errors ------------------------------------------------------

def _fake_cache(root: Path, repo_id: str, source: Path, commit: str) -> None:
    """The layout `hf download` leaves in HF_HUB_CACHE (plain files instead of blob links)."""
    repo = root / f"models--{repo_id.replace('/', '--')}"
    shutil.copytree(source, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)


@pytest.fixture
def offline_cache(monkeypatch, tmp_path):
    import huggingface_hub.constants as hub_constants

    from typoattack import hub

    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(hub, "is_hub_reachable", lambda timeout=3.0: False)
    return tmp_path / "hub"


def test_repo_id_resolves_from_the_cache_offline_with_its_commit(offline_cache, folders, images) -> None:
    commit = "0123456789abcdef0123456789abcdef01234567"
    _fake_cache(offline_cache, "tiny-org/tiny-clip", folders["clip"], commit)
    backend = get_backend("transformers")
    spec = ModelSpec("tiny-org/tiny-clip", backend="transformers")
    backend.check_model(spec)
    assert backend.get_input_size(spec) == (64, 64)
    assert backend.get_weights_id(spec) == f"hf:tiny-org/tiny-clip@{commit}"
    loaded = backend.load(spec, CPU, Precision.FP32)
    local = backend.load(ModelSpec(str(folders["clip"]), backend="transformers"), CPU, Precision.FP32)
    canvas = torch.from_numpy(np.array(loaded.geometry.transform(images[0])))[None]
    assert torch.equal(loaded.encode_images(canvas), local.encode_images(canvas))
    assert backend.get_weights_id(ModelSpec("tiny-org/tiny-clip", commit, backend="transformers")).endswith(commit)


@pytest.mark.parametrize("spec, pattern", [
    (ModelSpec("nobody/no-such-clip", backend="transformers"), "not in the Hugging Face cache"),
    (ModelSpec("tiny-org/tiny-clip", "v9", backend="transformers"), "not in the Hugging Face cache"),
    (ModelSpec("/no/such/folder", backend="transformers"), "does not exist"),
    (ModelSpec("tiny-org/tiny-clip", "seed:x", backend="transformers"), "seed:N with an integer"),
])
def test_unavailable_models_give_one_line_saying_how_to_supply_them(offline_cache, folders, spec, pattern) -> None:
    _fake_cache(offline_cache, "tiny-org/tiny-clip", folders["clip"], "f" * 40)
    backend = get_backend("transformers")
    for call in (backend.check_model, backend.get_geometry, lambda s: backend.load(s, CPU, Precision.FP32)):
        with pytest.raises(WeightsError, match=pattern) as info:
            call(spec)
        assert "\n" not in str(info.value)
    assert backend.get_input_size(spec) is None
    if pattern.startswith("not in"):
        assert "hf download" in str(info.value) and "save_pretrained" in str(info.value)


def test_folder_errors_name_what_is_wrong(folders, tmp_path) -> None:
    backend = get_backend("transformers")

    def spec_of(folder: Path) -> ModelSpec:
        return ModelSpec(str(folder), backend="transformers")

    no_config = tmp_path / "no-config"
    shutil.copytree(folders["clip"], no_config)
    (no_config / "config.json").unlink()
    with pytest.raises(WeightsError, match="no config.json"):
        backend.check_model(spec_of(no_config))
    no_weights = tmp_path / "no-weights"
    shutil.copytree(folders["clip"], no_weights)
    (no_weights / "model.safetensors").unlink()
    with pytest.raises(WeightsError, match="holds no weights"):
        backend.check_model(spec_of(no_weights))
    assert backend.load(ModelSpec(str(no_weights), "seed:0", backend="transformers"), CPU, Precision.FP32)
    with pytest.raises(WeightsError, match="takes none"):
        backend.check_model(ModelSpec(str(folders["clip"]), "main", backend="transformers"))
    other = tmp_path / "bert"
    shutil.copytree(folders["clip"], other)
    config = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps(dict(config, architectures=["CLIPVisionModel"])))
    with pytest.raises(WeightsError, match="holds a CLIPVisionModel, which the transformers backend does not support"):
        backend.check_model(spec_of(other))
    no_processor = tmp_path / "no-processor"
    shutil.copytree(folders["clip"], no_processor)
    (no_processor / "processor_config.json").unlink()
    with pytest.raises(WeightsError, match="no image processor"):
        backend.check_model(spec_of(no_processor))
    with pytest.raises(WeightsError, match="no image processor"):
        backend.get_geometry(spec_of(no_processor))


def test_weights_that_do_not_fill_the_class_are_refused(folders, tmp_path) -> None:
    from safetensors.torch import load_file, save_file

    partial = tmp_path / "partial"
    shutil.copytree(folders["siglip"], partial)
    tensors = load_file(partial / "model.safetensors")
    save_file({k: v for k, v in tensors.items() if not k.startswith("text_model.")}, partial / "model.safetensors",
              metadata={"format": "pt"})
    with pytest.raises(WeightsError, match="do not fill a SiglipModel"):
        get_backend("transformers").load(ModelSpec(str(partial), backend="transformers"), CPU, Precision.FP32)


def test_local_weights_id_follows_the_content(folders, tmp_path) -> None:
    backend = get_backend("transformers")
    copy_folder = tmp_path / "copy"
    shutil.copytree(folders["clip"], copy_folder)
    spec, spec_copy = (ModelSpec(str(f), backend="transformers") for f in (folders["clip"], copy_folder))
    assert backend.get_weights_id(spec) == backend.get_weights_id(spec_copy)
    (copy_folder / "config.json").write_text((copy_folder / "config.json").read_text() + " ")
    assert backend.get_weights_id(spec) != backend.get_weights_id(spec_copy)


def test_backend_lists_families_and_version() -> None:
    import transformers

    backend = get_backend("transformers")
    assert isinstance(backend, TransformersBackend) and backend.name == "transformers"
    assert {"CLIPModel", "SiglipModel", "Siglip2Model"} <= set(backend.list_models())
    assert backend.get_version() == transformers.__version__


# --- the other image-text families ----------------------------------------------------------

OTHER_FAMILIES = ("MetaClip2Model", "AltCLIPModel", "ChineseCLIPModel", "AlignModel")


@pytest.fixture(scope="module")
def other_models(tmp_path_factory) -> dict[str, TransformersModel]:
    root = tmp_path_factory.mktemp("families")
    backend = get_backend("transformers")
    return {name: backend.load(ModelSpec(str(hf_builders.build_generic_folder(root / name, name)),
                                         backend="transformers"), CPU, Precision.FP32) for name in OTHER_FAMILIES}


@pytest.mark.parametrize("name", OTHER_FAMILIES)
def test_other_families_match_their_own_forward(name, other_models, images) -> None:
    from transformers import AutoImageProcessor, AutoModel, AutoTokenizer

    model = other_models[name]
    folder = model.folder.path
    assert type(model.model).__name__ == name
    processor = AutoImageProcessor.from_pretrained(folder)
    raw = processor(images=images[:100], do_rescale=False, do_normalize=False, return_tensors="np")["pixel_values"]
    canvases = np.stack([np.asarray(model.geometry.transform(im)) for im in images[:100]])
    assert np.array_equal(np.moveaxis(raw, 1, -1), canvases)
    labels = list(IMAGENET_CLASSNAMES[:10])
    logits = build_logits(model, model.build_classifier(labels, ("a photo of a {}.",)), torch.from_numpy(canvases[:16]))
    reference = AutoModel.from_pretrained(folder).eval()
    tokens = AutoTokenizer.from_pretrained(folder)([f"a photo of a {c}." for c in labels], padding=True,
                                                   return_tensors="pt")
    with torch.no_grad():
        expected = reference(**tokens, **processor(images=images[:16], return_tensors="pt")).logits_per_image
    assert (logits - expected).abs().max() < 1e-4


@pytest.mark.parametrize("name", OTHER_FAMILIES)
def test_other_families_defences_or_one_line_refusals(name, other_models, images) -> None:
    model = other_models[name]
    canvases = torch.from_numpy(np.stack([np.asarray(model.geometry.transform(im)) for im in images[:4]]))
    if name == "AlignModel":  # an EfficientNet tower
        for call in (model.get_head_grid, model.get_patch_size, lambda: model.ablate_heads([(0, 0)]).__enter__()):
            with pytest.raises(ConfigError, match="not supported|no patch grid"):
                call()
    else:  # CLIP-style vision towers: the class token's output, as CLIP
        pixels = canvases.float().div(255).sub(torch.tensor(model.geometry.mean)).div(torch.tensor(model.geometry.std))
        with model.ablate_heads([(1, 0)]):
            ablated = model.encode_images(canvases)
        with torch.no_grad():
            expected = _vision_by_hand(model.model, pixels.permute(0, 3, 1, 2), {1: [0]}, class_token=True)
        assert (ablated - expected).abs().max() < 1e-5
    if name == "MetaClip2Model":  # CLIP's text tower and BPE
        vector = torch.randn(hf_builders.WIDTH, generator=torch.Generator().manual_seed(3))
        assert model.build_prefix_classifier(IMAGENET_CLASSNAMES[:5], vector, "a photo of a * {}.").shape == (32, 5)
    else:  # BERT / RoBERTa text towers
        with pytest.raises(ConfigError, match="Defense-Prefix is not supported"):
            model.get_text_width()
