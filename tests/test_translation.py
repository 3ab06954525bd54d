"""Translation between two models (the paper's Section 4.1): encode with export A, decode the code with export B.

The reference is diffusers' CycleDiffusionPipeline on checkpoint A whose UNet sends the source rows of each batch
to UNet A and the target rows to UNet B; B is a UNet-only fine-tune of A (same text encoder and VAE files)."""
from __future__ import annotations

import dataclasses
import logging
import subprocess
import sys
import threading

import numpy as np
import PIL.Image
import pytest
import torch
from reference import checkpoint_path, sample_image

from cyclediff import Engine, LatentCode, LatentCodeError
from cyclediff.export.manifest import Manifest

TOLERANCE = {"torch": 1e-4, "onnxruntime": 2e-3, "openvino": 2e-3}
CASES = [dict(), dict(guidance_scale=1.0, eta=0.5, strength=0.6)]  # CFG on (the defaults); CFG off


def two_unet_reference(a_export, b_export, seed: int, **kw) -> np.ndarray:
    """CycleDiffusionPipeline on A, its UNet calls split: source rows to UNet A, target rows to UNet B."""
    from diffusers import CycleDiffusionPipeline, UNet2DConditionModel
    from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput

    pipe = CycleDiffusionPipeline.from_pretrained(checkpoint_path(a_export), safety_checker=None,
                                                  requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    unet_b = UNet2DConditionModel.from_pretrained(checkpoint_path(b_export), subfolder="unet",
                                                  low_cpu_mem_usage=False).eval()
    forward_a = pipe.unet.forward

    def forward(sample, timestep, encoder_hidden_states=None, **options):
        # One image: rows (source uncond, target uncond, source cond, target cond) with CFG, (source, target)
        # without it, so even rows are the source branch and odd rows the target branch.
        out = torch.empty_like(sample)
        for rows, run in ((slice(0, None, 2), forward_a), (slice(1, None, 2), unet_b)):
            out[rows] = run(sample[rows], timestep, encoder_hidden_states=encoder_hidden_states[rows],
                            **options).sample
        return UNet2DConditionOutput(sample=out)

    pipe.unet.forward = forward
    return pipe(**kw, generator=torch.Generator().manual_seed(seed)).images


def _args(**kw) -> dict:
    return {**dict(prompt="a photo of a cat", source_prompt="a photo of a dog", num_inference_steps=10,
                   image=sample_image(32), output_type="np"), **kw}


@pytest.mark.parametrize("backend", ["torch", "onnxruntime", "openvino"])
@pytest.mark.parametrize("case", CASES, ids=["cfg", "no-cfg"])
def test_two_model_edit_matches_diffusers_with_split_unets(exports, finetune, backend, case):
    a = Engine.load(exports("tiny"), backend=backend, progress=False)
    b = Engine.load(finetune, backend=backend, progress=False)
    ours = a.edit(**_args(**case), generator=torch.Generator().manual_seed(3), decoder=b).images
    ref = two_unet_reference(exports("tiny"), finetune, 3, **_args(**case))
    plain = a.edit(**_args(**case), generator=torch.Generator().manual_seed(3)).images
    err = float(np.abs(ours - ref).max())
    print(f"two models {backend} {case}: max abs diff {err:.2e} (vs A alone {np.abs(plain - ref).max():.2e})")
    assert err <= TOLERANCE[backend]
    assert np.abs(plain - ref).max() > 100 * TOLERANCE[backend]  # B's UNet really decoded it


def test_decoder_equal_to_encoder_is_todays_edit_exactly(exports):
    a = Engine.load(exports("tiny"), backend="onnxruntime", progress=False)
    again = Engine.load(exports("tiny"), backend="onnxruntime", progress=False)
    today = a.edit(**_args(), generator=torch.Generator().manual_seed(1)).images
    for decoder in (a, again):
        assert np.array_equal(a.edit(**_args(), generator=torch.Generator().manual_seed(1), decoder=decoder).images,
                              today)


def test_saved_code_decodes_on_a_compatible_export(exports, finetune, tmp_path):
    a = Engine.load(exports("tiny"), backend="onnxruntime", progress=False)
    b = Engine.load(finetune, backend="onnxruntime", progress=False)
    out = a.edit(**_args(), generator=torch.Generator().manual_seed(2), decoder=b)
    out.code.save(tmp_path / "code.safetensors")
    loaded = LatentCode.load(tmp_path / "code.safetensors")
    assert loaded.space == a.space and loaded.engine_digest == a.manifest.digest != b.manifest.digest
    again = b.decode(loaded, "a photo of a cat", output_type="np").images
    assert np.array_equal(again, out.images)
    prompts = a.edit_prompts(["a photo of a cat", "a bird"], "a photo of a dog", sample_image(32),
                             num_inference_steps=10, generator=torch.Generator().manual_seed(2), output_type="np",
                             decoder=b)
    assert np.array_equal(prompts.images[:1], out.images)


def test_incompatible_decoders_are_refused_with_the_reason(exports):
    a = Engine.load(exports("tiny"), backend="onnxruntime", progress=False)
    code = a.encode(sample_image(32), "a dog", num_inference_steps=5, generator=torch.Generator().manual_seed(0))
    for name, why in (("tiny-trailing", "training schedule beta_schedule 'scaled_linear' in the code's export, "
                                        "'linear' in this one"),
                      ("tiny-deep", "VAE downscale 2 in the code's export, 4 in this one")):
        other = Engine.load(exports(name), backend="onnxruntime", progress=False)
        with pytest.raises(LatentCodeError, match=why):
            other.decode(code, "a cat")
        with pytest.raises(LatentCodeError, match=why):
            a.edit(**_args(), decoder=other)
    with pytest.raises(TypeError, match="decoder must be an Engine"):
        a.edit(**_args(), decoder=str(exports("tiny")))


def test_another_vae_or_text_encoder_is_decoded_but_said(exports, caplog):
    a = Engine.load(exports("tiny"), backend="onnxruntime", progress=False)
    code = a.encode(sample_image(32), "a dog", num_inference_steps=5, generator=torch.Generator().manual_seed(0))
    elsewhere = dataclasses.replace(code, engine_digest="f" * 64,
                                    space=dataclasses.replace(code.space, vae="other", text_encoder="other"))
    with caplog.at_level(logging.WARNING, logger="cyclediff"):
        a.decode(elsewhere, "a cat", output_type="np")
    assert "whose VAE and text encoder differ" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="cyclediff"):
        a.decode(code, "a cat", output_type="np")  # its own code: nothing to say
    assert caplog.text == ""


def test_codes_without_a_space_decode_only_where_they_were_made(exports):
    a = Engine.load(exports("tiny"), backend="onnxruntime", progress=False)
    code = a.encode(sample_image(32), "a dog", num_inference_steps=5, generator=torch.Generator().manual_seed(0))
    old = dataclasses.replace(code, engine_digest=a.manifest.legacy_digest, space=None)  # as cyclediff < 0.2 saved
    assert np.array_equal(a.decode(old, "a cat", output_type="np").images,
                          a.decode(code, "a cat", output_type="np").images)
    with pytest.raises(LatentCodeError, match="records no latent space"):
        a.decode(dataclasses.replace(old, engine_digest="0" * 64), "a cat")


def test_digest_is_the_models_content_not_the_exports_incidentals(exports, tmp_path):
    """Two fresh exports of one checkpoint (their ort/ graphs' stamps differ), and a re-run adding --torchscript
    (every ONNX model reused), keep the digest that codes record."""
    from cyclediff.export.pipeline import export

    first = Manifest.load(exports("tiny"))
    fresh = export("tiny", tmp_path / "fresh", quiet=True)
    assert fresh.to_json() != first.to_json() and fresh.digest == first.digest
    more = export("tiny", tmp_path / "fresh", quiet=True, torchscript=True)
    assert "torchscript" in more.extra and more.digest == first.digest
    assert more.legacy_digest != first.legacy_digest


def test_batching_merges_calls_of_one_unet_only(exports, finetune):
    """Concurrent A→B edits and B edits: B's UNet calls merge with B's, A's dispatcher sees only A's encodes."""
    a = Engine.load(exports("tiny"), backend="onnxruntime", progress=False, batch_wait_ms=50)
    b = Engine.load(finetune, backend="onnxruntime", progress=False, batch_wait_ms=50)
    jobs = a.dispatcher.stats["unet_jobs"]
    solo = {"ab": a.edit(**_args(), generator=torch.Generator().manual_seed(4), decoder=b).images,
            "bb": b.edit(**_args(), generator=torch.Generator().manual_seed(4)).images}
    encoder_jobs = a.dispatcher.stats["unet_jobs"] - jobs  # the A→B edit's encoder calls, the only ones on A
    a_jobs = a.dispatcher.stats["unet_jobs"]
    results: dict[str, np.ndarray] = {}

    def work(key: str) -> None:
        engine, decoder = (a, b) if key == "ab" else (b, None)
        results[key] = engine.edit(**_args(), generator=torch.Generator().manual_seed(4), decoder=decoder).images

    threads = [threading.Thread(target=work, args=(k,)) for k in ("ab", "bb")]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert a.dispatcher.stats["unet_jobs"] - a_jobs == encoder_jobs
    for key in results:
        assert np.abs(results[key] - solo[key]).max() <= 1e-5


def test_cli_decoder_engine_matches_the_api(exports, finetune, tmp_path):
    image = tmp_path / "in.png"
    sample_image(32).save(image)
    cmd = [sys.executable, "-m", "cyclediff.runtime.cli", "--engine", str(exports("tiny")), "--image", str(image),
           "--source-prompt", "a photo of a dog", "--prompt", "a photo of a cat", "--steps", "10", "--seed", "5",
           "--backend", "onnxruntime", "--quiet"]
    done = subprocess.run([*cmd, "--decoder-engine", str(finetune), "--out", str(tmp_path / "ab.png"),
                           "--save-code", str(tmp_path / "code.safetensors")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    a = Engine.load(exports("tiny"), backend="onnxruntime", progress=False)
    b = Engine.load(finetune, backend="onnxruntime", progress=False)
    api = a.edit(**_args(image=PIL.Image.open(image).convert("RGB"), output_type="pil"),
                 generator=torch.Generator().manual_seed(5), decoder=b).images[0]
    assert np.array_equal(np.asarray(PIL.Image.open(tmp_path / "ab.png")), np.asarray(api))
    decode = [sys.executable, "-m", "cyclediff.runtime.cli", "--engine", str(exports("tiny")), "--decoder-engine",
              str(finetune), "--code", str(tmp_path / "code.safetensors"), "--prompt", "a photo of a cat",
              "--out", str(tmp_path / "again.png"), "--backend", "onnxruntime", "--quiet"]
    assert subprocess.run(decode, capture_output=True, text=True).returncode == 0
    assert np.array_equal(np.asarray(PIL.Image.open(tmp_path / "again.png")), np.asarray(api))
    bad = subprocess.run([*cmd, "--decoder-engine", str(exports("tiny-trailing")), "--out", str(tmp_path / "x.png")],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "cannot decode codes of --engine" in bad.stderr
    assert "beta_schedule" in bad.stderr and not (tmp_path / "x.png").exists()
