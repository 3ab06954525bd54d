"""Pix2Pix-Zero parity: Engine.invert / edit_direction / pix2pix_zero equal diffusers' pipeline, same seeds."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from pix2pix_zero_reference import reference_edit, reference_embeds, reference_invert
from reference import sample_image

from cyclediff import Engine, InversionCode

INVERT_TOL = {"torch": 1e-4, "onnxruntime": 2e-3, "openvino": 2e-3}
EDIT_TOL = {"torch": 1e-3, "onnxruntime": 2e-3, "openvino": 2e-3}
CAPTION = "a photo of a cat"
SOURCE, TARGET = ["a cat", "a photo of a cat", "a cat on a sofa"], ["a dog", "a photo of a dog"]
STEPS = 4
INVERT_CASES = [
    dict(),  # diffusers' defaults: guidance 1, lambdas 20, 5 regularization steps of 5 rolls
    dict(guidance_scale=3.0, num_reg_steps=2, num_auto_corr_rolls=3),
    dict(lambda_auto_corr=0.0, lambda_kl=5.0),
]


def _engine(exports, name="tiny", backend="torch") -> Engine:
    return Engine.load(exports(name), backend=backend, progress=False)


@pytest.fixture(scope="module")
def tiny(exports) -> Engine:
    """One torch engine for the edit tests (loading is most of a tiny test's time)."""
    return _engine(exports)


@pytest.fixture(scope="module")
def cat(tiny) -> InversionCode:
    return _invert(tiny)


def _invert(engine: Engine, seed: int = 0, **kw) -> InversionCode:
    args = dict(prompt=CAPTION, image=sample_image(engine.manifest.sample_size), num_inference_steps=STEPS)
    return engine.invert(**args, **kw, generator=torch.Generator().manual_seed(seed), output_type=None)


@pytest.mark.parametrize("backend", ["torch", "onnxruntime", "openvino"])
@pytest.mark.parametrize("case", INVERT_CASES, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()) or "defaults")
def test_invert_matches_diffusers(exports, backend, case):
    engine = _engine(exports, backend=backend)
    ours = _invert(engine, **case).latents
    ref = reference_invert(exports("tiny"), 0, prompt=CAPTION, image=sample_image(engine.manifest.sample_size),
                           num_inference_steps=STEPS, **case)
    err = float((ours - ref).abs().max())
    print(f"invert tiny {backend} {case}: max abs diff {err:.2e}")
    assert ours.shape == ref.shape and err <= INVERT_TOL[backend]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["tiny-deep", "tiny-trailing"])
def test_other_checkpoint_configs_match_diffusers(exports, name):
    """Latent scale 4 and 3 UNet levels; trailing spacing with a linear schedule: invert and edit."""
    engine = _engine(exports, name)
    code = _invert(engine)
    size = engine.manifest.sample_size
    ref = reference_invert(exports(name), 0, prompt=CAPTION, image=sample_image(size), num_inference_steps=STEPS)
    assert float((code.latents - ref).abs().max()) <= INVERT_TOL["torch"]
    direction = engine.edit_direction(SOURCE, TARGET)
    ours = engine.pix2pix_zero(prompt=CAPTION, source_embeds=direction.source_embeds, latents=code,
                               target_embeds=direction.target_embeds, num_inference_steps=STEPS, output_type="np")
    theirs = reference_edit(exports(name), 0, prompt=CAPTION, source_embeds=reference_embeds(exports(name), SOURCE),
                            target_embeds=reference_embeds(exports(name), TARGET), latents=code.latents,
                            num_inference_steps=STEPS, output_type="np")
    err = float(np.abs(ours.images - theirs).max())
    print(f"edit {name}: max abs diff {err:.2e}")
    assert err <= EDIT_TOL["torch"]


def test_directions_from_sentences_match_get_embeds(exports, tiny):
    engine = tiny
    direction = engine.edit_direction(SOURCE * 7, TARGET)  # 21 sentences: two text-encoder chunks, as diffusers
    assert float((direction.source_embeds - reference_embeds(exports("tiny"), SOURCE * 7)).abs().max()) <= 1e-5
    assert float((direction.target_embeds - reference_embeds(exports("tiny"), TARGET)).abs().max()) <= 1e-5


EDIT_CASES = [
    dict(),  # diffusers' defaults: guidance 7.5, amount 0.1, eta 0
    dict(guidance_scale=1.0),  # no CFG: diffusers' [1:2] slice is empty, the direction is not applied
    dict(eta=0.6, cross_attention_guidance_amount=0.3, negative_prompt=CAPTION),
    pytest.param(dict(guidance_scale=3.0, clip_skip=1), marks=pytest.mark.slow),
]


@pytest.mark.parametrize("case", EDIT_CASES, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()) or "defaults")
def test_edit_with_sentence_direction_matches_diffusers(exports, tiny, cat, case):
    engine, code = tiny, cat
    direction = engine.edit_direction(SOURCE, TARGET)
    ours = engine.pix2pix_zero(prompt=CAPTION, source_embeds=direction.source_embeds, latents=code,
                               target_embeds=direction.target_embeds, num_inference_steps=STEPS, output_type="np",
                               generator=torch.Generator().manual_seed(3), **case).images
    ref = reference_edit(exports("tiny"), 3, prompt=CAPTION, source_embeds=reference_embeds(exports("tiny"), SOURCE),
                         target_embeds=reference_embeds(exports("tiny"), TARGET), latents=code.latents,
                         num_inference_steps=STEPS, output_type="np", **case)
    err = float(np.abs(ours - ref).max())
    print(f"edit tiny torch {case}: max abs diff {err:.2e}")
    assert ours.shape == ref.shape and err <= EDIT_TOL["torch"]


def test_edit_with_precomputed_embeddings_matches_diffusers(exports, tiny, cat):
    """Sentence-bank means computed elsewhere (e.g. the original repo's .pt files): (n, 77, D) tensors."""
    engine, code = tiny, cat
    g = torch.Generator().manual_seed(0)
    src, tgt = (0.5 * torch.randn(n, 77, engine.manifest.dims.text_width, generator=g) for n in (1, 3))
    ours = engine.pix2pix_zero(prompt=CAPTION, source_embeds=src, target_embeds=tgt, latents=code,
                               num_inference_steps=STEPS, output_type="np").images
    ref = reference_edit(exports("tiny"), 0, prompt=CAPTION, source_embeds=src, target_embeds=tgt,
                         latents=code.latents, num_inference_steps=STEPS, output_type="np")
    assert float(np.abs(ours - ref).max()) <= EDIT_TOL["torch"]


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_no_guidance_runs_on_a_forward_only_backend_and_matches_diffusers(exports, backend):
    """cross_attention_guidance_amount=0 needs no gradient: a plain DDIM loop on any backend."""
    engine = _engine(exports, backend=backend)
    code = _invert(engine)
    direction = engine.edit_direction(SOURCE, TARGET)
    ours = engine.pix2pix_zero(prompt=CAPTION, source_embeds=direction.source_embeds, latents=code,
                               target_embeds=direction.target_embeds, num_inference_steps=STEPS, output_type="np",
                               cross_attention_guidance_amount=0).images
    ref = reference_edit(exports("tiny"), 0, prompt=CAPTION, source_embeds=reference_embeds(exports("tiny"), SOURCE),
                         target_embeds=reference_embeds(exports("tiny"), TARGET), latents=code.latents,
                         num_inference_steps=STEPS, output_type="np", cross_attention_guidance_amount=0)
    assert float(np.abs(ours - ref).max()) <= EDIT_TOL[backend]


def test_lockstep_equals_store_all_and_holds_one_step_of_maps(tiny, cat):
    engine, code = tiny, cat
    direction = engine.edit_direction(SOURCE, TARGET)
    runs = {}
    for trajectory in ("lockstep", "store-all"):
        out = engine.pix2pix_zero(prompt=CAPTION, source_embeds=direction.source_embeds, latents=code,
                                  target_embeds=direction.target_embeds, num_inference_steps=STEPS,
                                  output_type="latent", trajectory=trajectory, eta=0.4,
                                  generator=torch.Generator().manual_seed(5)).images
        runs[trajectory] = (out, engine.pix2pix.last_editor.peak_map_bytes)
    assert torch.equal(runs["lockstep"][0], runs["store-all"][0])
    assert runs["store-all"][1] == STEPS * runs["lockstep"][1] > 0


def test_inversion_code_round_trips(tiny, cat, tmp_path):
    engine, code = tiny, cat
    code.save(tmp_path / "cat.inv")
    loaded = InversionCode.load(tmp_path / "cat.inv")
    assert torch.equal(loaded.latents, code.latents) and loaded.prompt == CAPTION
    assert loaded.num_inference_steps == STEPS and loaded.engine_digest == engine.manifest.digest


def test_concurrent_with_cycle_diffusion_on_one_engine(tiny, cat):
    """The attn2 probes are per thread: a CycleDiffusion edit beside a guided edit on the same torch UNet
    gives what each gives alone (within the merged-batch rounding of the concurrency contract)."""
    from concurrent.futures import ThreadPoolExecutor

    direction = tiny.edit_direction(SOURCE, TARGET)

    def p2p():
        return tiny.pix2pix_zero(prompt=CAPTION, source_embeds=direction.source_embeds, latents=cat,
                                 target_embeds=direction.target_embeds, num_inference_steps=STEPS,
                                 output_type="latent").images

    def cycle():
        return tiny.edit("a dog", CAPTION, sample_image(tiny.manifest.sample_size), num_inference_steps=STEPS,
                         generator=torch.Generator().manual_seed(0), output_type="latent").images

    alone = (p2p(), cycle())
    with ThreadPoolExecutor(2) as pool:
        together = [f.result() for f in [pool.submit(p2p), pool.submit(cycle)]]
    for a, b in zip(alone, together):
        assert float((a - b).abs().max()) <= 1e-4


def test_every_model_call_of_the_guided_edit_takes_the_cancel_check(tiny, cat, monkeypatch):
    """The guided step calls a torch UNet directly (it needs gradients), outside the dispatcher's jobs; it still
    runs the caller's cancel_scope check first, as every dispatched model call does (the VAE's too). In the log of
    checks and calls, each call comes right after a check; a check that raises stops the edit there, and the engine
    then edits as before."""
    from cyclediff import cancel_scope
    from cyclediff.runtime.methods.pix2pix_zero.attention_guidance import TorchUNet

    direction = tiny.edit_direction(SOURCE, TARGET)

    def edit():
        return tiny.pix2pix_zero(prompt=CAPTION, source_embeds=direction.source_embeds, latents=cat,
                                 target_embeds=direction.target_embeds, num_inference_steps=STEPS, output_type="np",
                                 generator=torch.Generator().manual_seed(3)).images

    before = edit()
    log, real_torch, real_call = [], TorchUNet.__call__, tiny.dispatcher.call

    def torch_unet(self, *args, **kw):
        log.append("torch")
        return real_torch(self, *args, **kw)

    def dispatched(model, feeds, outputs):
        log.append(model)
        return real_call(model, feeds, outputs)

    monkeypatch.setattr(TorchUNet, "__call__", torch_unet)
    monkeypatch.setattr(tiny.dispatcher, "call", dispatched)
    with cancel_scope(lambda: log.append("check")):
        edit()
    calls = [i for i, entry in enumerate(log) if entry != "check"]
    assert log.count("torch") >= STEPS and all(log[i - 1] == "check" for i in calls), log

    class Stop(Exception):
        pass

    def stop_at_torch():  # raise at the first check after the first torch UNet call
        if log.count("torch") == 1:
            raise Stop

    log.clear()
    with pytest.raises(Stop), cancel_scope(stop_at_torch):
        edit()
    assert log.count("torch") == 1, log
    monkeypatch.undo()
    assert np.array_equal(edit(), before)
