"""Test export directories with TorchScript programs, and the Python runtime's outputs for the C++ parity test."""
from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import numpy as np
import torch

# The fixed image and prompts every parity case edits.
SOURCE, TARGET = "a photo of a dog", "a photo of a cat"
CASES = [  # name, op, params (Engine.encode/edit keywords), seed
    ("edit_default", "edit", {"num_inference_steps": 10}, 3),
    ("edit_guided_batched", "edit", {"num_inference_steps": 12, "strength": 0.75, "source_guidance_scale": 2.5,
                                     "eta": 0.7, "num_images_per_prompt": 2, "guidance_scale": 3.0}, 5),
    ("code_eta0", "encode_decode", {"num_inference_steps": 6, "strength": 1.0, "eta": 0.0}, 7),
    ("code_unguided_clipskip", "encode_decode", {"num_inference_steps": 5, "strength": 0.6, "guidance_scale": 1.0,
                                                 "clip_skip": 0, "source_guidance_scale": 1.5}, 11),
    ("code_batched_guided", "encode_decode", {"num_inference_steps": 6, "strength": 0.8, "eta": 0.5,
                                              "source_guidance_scale": 2.0, "num_images_per_prompt": 2}, 13),
    ("code_corpus_prompts", "encode_decode", {"num_inference_steps": 6, "source_guidance_scale": 1.5}, 17),
]
# Cases whose prompts are not SOURCE/TARGET: prompts of the tokenizer tests' corpus (golden.py CORPUS: accents,
# Greek sigma, CJK, emoji, contractions, truncation), so the whole edit, not only the ids, is compared on them.
PROMPTS = {"code_corpus_prompts": ("café crème brûlée, ΣΊΣΥΦΟΣ σοφός, 日本語のテキスト 😀🎉👍🏽",
                                   "İstanbul naïve résumé, it's a dog's life; " + "over-long " * 45)}
ENCODE_KEYS = ("strength", "num_inference_steps", "source_guidance_scale", "eta", "num_images_per_prompt", "clip_skip")


def export(out: Path, ckpt: str = "tiny") -> None:
    """A complete export dir for the C++ side, made by the real `cyclediff-export` path with --torchscript."""
    from PIL import Image

    from cyclediff.export.pipeline import export as run_export

    manifest = run_export(ckpt, out, quiet=True, torchscript=True)
    Image.fromarray(_image(manifest.sample_size)).save(out / "input.png")


def _image(size: int) -> np.ndarray:
    return (np.random.RandomState(0).rand(size, size, 3) * 255).astype("uint8")


def _recording():
    """Patch NoiseSource.randn_into to keep a copy of every draw, in order."""
    from cyclediff.runtime.core.noise import NoiseSource

    draws: list[np.ndarray] = []
    original = NoiseSource.randn_into

    def randn_into(self, out, items=None):
        result = original(self, out, items)
        draws.append(result.detach().cpu().numpy().copy())
        return result

    NoiseSource.randn_into = randn_into
    return draws, lambda: setattr(NoiseSource, "randn_into", original)


def _flat(a) -> list[float]:
    return np.asarray(a, dtype=np.float32).ravel().astype(np.float64).tolist()


def _run_case(eng, image, name: str, op: str, params: dict, seed: int, out: Path) -> dict:
    source, target = PROMPTS.get(name, (SOURCE, TARGET))
    from PIL import Image

    draws, restore = _recording()
    try:
        gen = torch.Generator().manual_seed(seed)
        if op == "edit":
            images = eng.edit(target, source, Image.fromarray(image), generator=gen, output_type="np", **params).images
            code = None
        else:
            code = eng.encode(Image.fromarray(image), source, generator=gen,
                              **{k: v for k, v in params.items() if k in ENCODE_KEYS})
            images = eng.decode(code, target, guidance_scale=params.get("guidance_scale", 7.5), output_type="np",
                                clip_skip=params.get("clip_skip")).images
    finally:
        restore()
    case = {"name": name, "op": op, "params": params, "seed": seed, "source_prompt": source, "prompt": target,
            "draws": {"n_vae": _flat(draws[0]), "n0": _flat(draws[1]),
                      "steps": _flat(np.concatenate([x.ravel() for x in draws[2:]]) if len(draws) > 2 else [])},
            "images": _flat(images), "images_shape": list(images.shape)}
    if code is not None:
        case["x_T"], case["noises"] = _flat(code.x_T), _flat(code.noises)
        code.save(out / f"py_code_{name}.safetensors")
        case["py_code"] = f"py_code_{name}.safetensors"
    return case


# Per parity set, what test_parity checks: the Python backend and dtype that record it, the C++ executor that must
# reproduce them, the max abs diff of float outputs, the max per-byte diff of RGB8 outputs, and whether a seed gives
# Python's draws. torch runs the same kernels as libtorch (measured diff 0). OpenVINO's C++ executor compiles the
# same IR the same way as the Python backend (dynamic text encoder and VAE, a static batch-1 UNet per latent size)
# with the same thread count, and both round the schedule's square roots correctly (schedule.rounded_sqrt), so
# fp32 and bf16 both measured diff 0; its seeds use the portable generator, not torch's, so only the injected
# draws are compared.
BACKENDS = {"torch": {"backend": "torch", "dtype": "fp32", "executor": "torch", "tolerance": 1e-4,
                      "rgb8_tolerance": 0, "seeded": True},
            "openvino": {"backend": "openvino", "dtype": "fp32", "executor": "openvino", "tolerance": 1e-4,
                         "rgb8_tolerance": 1, "seeded": False},
            "openvino-bf16": {"backend": "openvino", "dtype": "bf16", "executor": "openvino", "tolerance": 1e-4,
                              "rgb8_tolerance": 1, "seeded": False}}


def _engine(folder: Path, backend: str):
    from cyclediff.runtime.engine import Engine

    spec = BACKENDS[backend]
    return Engine.load(folder, backend=spec["backend"], progress=False, dtype=spec["dtype"])


def parity(out: Path, ckpt: str = "tiny", backend: str = "torch") -> None:
    """out/cases.json: for each case the Python runtime's draws, latent code and output images."""
    from cyclediff.runtime.core.backends import threads_for

    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    folder = out.parent / f"export-{ckpt}"
    eng = _engine(folder, backend)
    image = _image(eng.manifest.sample_size)
    cases = [_run_case(eng, image, *c, out) for c in CASES]
    result = {"export": str(folder), "digest": eng.manifest.digest, **BACKENDS[backend], "threads": threads_for(None),
              "width": image.shape[1], "height": image.shape[0], "rgb": image.ravel().tolist(), "cases": cases}
    (out / "cases.json").write_text(json.dumps(result), encoding="utf-8")


def check_code(out: Path, ckpt: str = "tiny", backend: str = "torch") -> None:
    """The codes the C++ test saved (cpp_code_<case>.safetensors) load in Python, equal Python's, and decode."""
    from cyclediff.runtime.core.latent_code import LatentCode

    eng = _engine(out.parent / f"export-{ckpt}", backend)
    tolerance = BACKENDS[backend]["tolerance"]
    cases = json.loads((out / "cases.json").read_text(encoding="utf-8"))["cases"]
    checked = 0
    for case in (c for c in cases if "py_code" in c):
        cpp = LatentCode.load(out / f"cpp_code_{case['name']}.safetensors")
        py = LatentCode.load(out / case["py_code"])
        diff = max(float((cpp.x_T - py.x_T).abs().max()), float((cpp.noises - py.noises).abs().max()))
        same_meta = (cpp.timesteps, cpp.source_prompts, cpp.engine_digest) == (py.timesteps, py.source_prompts,
                                                                               py.engine_digest)
        images = eng.decode(cpp, case["prompt"], guidance_scale=case["params"].get("guidance_scale", 7.5), output_type="np",
                            clip_skip=case["params"].get("clip_skip")).images
        img_diff = float(np.abs(images.ravel() - np.asarray(case["images"], dtype=np.float32)).max())
        print(f"{case['name']}: C++ code vs Python code max abs diff {diff:.3g}, Python decode of the C++ code "
              f"vs Python's output {img_diff:.3g}, metadata equal {same_meta}")
        if diff > tolerance or img_diff > tolerance or not same_meta:
            raise SystemExit(f"{case['name']}: the C++ latent code does not match Python's")
        checked += 1
    if not checked:
        raise SystemExit("no C++ latent codes were checked")
