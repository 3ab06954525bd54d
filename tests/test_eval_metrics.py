"""cyclediff.eval metrics against hand-worked cases, an independent SSIM (torchmetrics' map), torchmetrics' CLIP
score, and an embedding model whose outputs are known (directional CLIP)."""
from __future__ import annotations

import math
from typing import ClassVar

import pytest
import torch

from cyclediff.eval import metrics


def constant(value: float, side: int = 16) -> torch.Tensor:
    return torch.full((1, 3, side, side), value, dtype=torch.float64)


# ---- PSNR and L2 ------------------------------------------------------------------------------------------
def test_psnr_and_l2_hand_worked():
    # MSE of 0.1 everywhere is 0.01: PSNR = -10 log10(0.01) = 20 dB; 0.5 away gives 6.0206 dB.
    ref = constant(0.0)
    out = torch.cat([constant(0.1), constant(0.5)])
    assert metrics.l2(out, ref).tolist() == pytest.approx([0.01, 0.25], rel=1e-12)
    # torchmetrics takes the log in float32: 1e-5 dB is its rounding, not an approximation of ours
    assert metrics.psnr(out, ref).tolist() == pytest.approx([20.0, 10 * math.log10(4)], abs=1e-5)


def test_psnr_identical_is_infinite_and_known_noise_level():
    """torchmetrics' documented behaviour: identical images -> inf. A +-sigma noise has MSE sigma^2 exactly."""
    ref = torch.rand(2, 3, 24, 24, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 0.6 + 0.2
    assert torch.isinf(metrics.psnr(ref, ref)).all()
    sign = torch.randint(0, 2, ref.shape, generator=torch.Generator().manual_seed(1)) * 2 - 1
    for sigma, db in ((0.1, 20.0), (0.01, 40.0)):
        noisy = ref + sigma * sign
        assert metrics.psnr(noisy, ref).tolist() == pytest.approx([db, db], abs=1e-5)
        assert metrics.l2(noisy, ref).tolist() == pytest.approx([sigma**2] * 2, rel=1e-6)


# ---- SSIM ---------------------------------------------------------------------------------------------------
def test_ssim_identical_is_one():
    ref = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    assert metrics.ssim(ref, ref).item() == pytest.approx(1.0, abs=1e-12)


def test_ssim_hand_worked_constant_images():
    """Flat images have no variance: SSIM = luminance term (2ab + C1)/(a^2 + b^2 + C1), C1 = (0.01)^2."""
    a, b, c1 = 0.5, 0.25, 0.01**2
    expected = (2 * a * b + c1) / (a * a + b * b + c1)
    assert metrics.ssim(constant(a, 32), constant(b, 32)).item() == pytest.approx(expected, rel=1e-9)


def test_ssim_matches_an_independent_implementation():
    """torchmetrics' SSIM map (its own Gaussian-window code) averaged over the valid windows only, as Wang et
    al.'s MATLAB code does (torchmetrics itself also averages the reflection-padded border windows)."""
    from torchmetrics.functional.image import structural_similarity_index_measure as tm_ssim

    gen = torch.Generator().manual_seed(3)
    ref = torch.rand(1, 3, 40, 48, generator=gen, dtype=torch.float64)
    outs = (ref + 0.1 * torch.randn(3, 3, 40, 48, generator=gen, dtype=torch.float64)).clamp(0, 1)
    ours = metrics.ssim(outs, ref)
    _, full = tm_ssim(outs, ref.expand_as(outs), gaussian_kernel=True, sigma=1.5, kernel_size=11, data_range=1.0,
                      reduction="none", return_full_image=True)
    valid = full[..., 5:-5, 5:-5].mean(dim=(1, 2, 3))  # 11x11 window: 5 px of border have padded windows
    assert ours.tolist() == pytest.approx(valid.tolist(), abs=1e-9)
    assert 0.5 < ours.min() < ours.max() < 0.99  # a real comparison: neither trivial value


def test_ssim_refuses_images_smaller_than_its_window():
    with pytest.raises(ValueError, match="at least 11x11"):
        metrics.ssim(constant(0.1, 8), constant(0.2, 8))


def test_metrics_refuse_mismatched_shapes():
    with pytest.raises(ValueError, match="one size"):
        metrics.psnr(constant(0.1, 16), constant(0.1, 8))


# ---- directional CLIP with an embedding model whose outputs are known -------------------------------------
class ColourEmbedder:
    """A stand-in for CLIP: an image embeds to its mean colour, a text to its colour word's RGB vector."""

    WORDS: ClassVar[dict[str, tuple[float, ...]]] = {"red": (1.0, 0.0, 0.0), "green": (0.0, 1.0, 0.0), "blue": (0.0, 0.0, 1.0)}

    def embed_images(self, images: torch.Tensor) -> torch.Tensor:
        return images.mean(dim=(2, 3))

    def embed_texts(self, texts: list[str]) -> torch.Tensor:
        return torch.tensor([self.WORDS[t] for t in texts])


def colour(rgb) -> torch.Tensor:
    return torch.tensor(rgb, dtype=torch.float32).view(1, 3, 1, 1).expand(1, 3, 8, 8)


@pytest.mark.parametrize("before, after, source, target, expected", [
    ((1, 0, 0), (0, 1, 0), "red", "green", 1.0),  # moved exactly along the text edit
    ((1, 0, 0), (0, 1, 0), "green", "red", -1.0),  # exactly against it
    ((1, 0, 0), (0, 1, 0), "red", "blue", 0.5),  # (-1,1,0)/v2 . (-1,0,1)/v2 = 1/2
    ((1, 0, 0), (0, 0.5, 0), "red", "green", 1.0),  # embeddings are normalized first: brightness is ignored
    ((1, 0, 0), (1, 0, 0), "red", "green", 0.0),  # unchanged image: no direction
])
def test_directional_clip_known_embeddings(before, after, source, target, expected):
    model = ColourEmbedder()
    got = metrics.directional_clip(model.embed_images(colour(after)), model.embed_images(colour(before)),
                                   model.embed_texts([target]), model.embed_texts([source]))
    assert got.item() == pytest.approx(expected, abs=1e-6)


def test_directional_clip_is_per_image():
    model = ColourEmbedder()
    outs = torch.cat([colour((0, 1, 0)), colour((0, 0, 1))])
    got = metrics.directional_clip(model.embed_images(outs), model.embed_images(colour((1, 0, 0))),
                                   model.embed_texts(["green"]), model.embed_texts(["red"]))
    assert got.tolist() == pytest.approx([1.0, 0.5], abs=1e-6)


# ---- CLIP score: torchmetrics' scaling ----------------------------------------------------------------------
def test_clip_score_hand_worked():
    img = torch.tensor([[1.0, 0.0], [1.0, 1.0], [-1.0, 0.0]])
    txt = torch.tensor([[3.0, 0.0]])
    assert metrics.clip_score(img, txt).tolist() == pytest.approx([100.0, 100 / math.sqrt(2), 0.0])


def test_clip_score_matches_torchmetrics(tmp_path):
    """Same random-weight CLIP, same images and texts: our score from embeddings equals torchmetrics'
    clip_score (given a model adapter, since with transformers >= 5 its feature calls return objects)."""
    from torchmetrics.functional.multimodal import clip_score as tm_clip_score

    from cyclediff.eval.clip_model import ClipEmbedder
    from cyclediff.eval.tiny_clip import write_tiny_clip

    clip = ClipEmbedder(write_tiny_clip(tmp_path / "clip", seed=1))
    gen = torch.Generator().manual_seed(4)
    images = torch.rand(3, 3, 40, 40, generator=gen)
    texts = ["a photo of a cat", "a red car", "a dog in the snow"]
    ours = metrics.clip_score(clip.embed_images(images), clip.embed_texts(texts))
    adapter = _TensorFeatures(clip.model)
    for k in range(3):
        pixels = (images[k] * 255).round().to(torch.uint8)
        theirs = tm_clip_score(pixels, texts[k], lambda: (adapter, clip.processor))
        assert ours[k].item() == pytest.approx(theirs.item(), abs=1e-4)
    assert ours.max() > 0  # a real comparison, not two clamped zeros


class _TensorFeatures:
    """CLIPModel whose get_*_features return the projected tensor (transformers < 5's return type)."""

    def __init__(self, model):
        self.model, self.config = model, model.config

    def to(self, device):
        return self

    def get_image_features(self, *args, **kwargs):
        out = self.model.get_image_features(*args, **kwargs)
        return out if isinstance(out, torch.Tensor) else out.pooler_output

    def get_text_features(self, *args, **kwargs):
        out = self.model.get_text_features(*args, **kwargs)
        return out if isinstance(out, torch.Tensor) else out.pooler_output


def test_missing_clip_names_the_download_command(monkeypatch, tmp_path):
    from cyclediff.eval.clip_model import ClipError, resolve_clip

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ClipError, match="hf download openai/clip-vit-base-patch32"):
        resolve_clip("openai/clip-vit-base-patch32")
    (tmp_path / "notclip").mkdir()
    with pytest.raises(ClipError, match="no config.json"):
        resolve_clip(str(tmp_path / "notclip"))
