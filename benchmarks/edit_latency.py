"""Edit latency: diffusers' CycleDiffusionPipeline vs cyclediff on each backend, same checkpoint, one process.

    python benchmarks/edit_latency.py                                   # CPU, built-in `tiny` (~2 minutes)
    python benchmarks/edit_latency.py --arch sd-v1-4 --device cuda --dtype fp16 --compile
    python benchmarks/edit_latency.py --dtype bf16                      # CPU bf16: openvino, torch, diffusers

Scenarios: (a) first edit of an image (encode + decode), (b) the same edit again from a cached LatentCode
(decode only; diffusers has no cache, so its row is a full edit), (c) N target prompts for one image
(diffusers: N full edits; cyclediff: 1 encode + N decodes). Medians over --repeat runs after --warmup runs.
"""
from __future__ import annotations

import argparse
import dataclasses
import inspect
import os
import resource
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import PIL.Image
import torch

SOURCE = "a photo of a house on a hill"
SCENARIO_C = "(c) {n} prompts, 1 image"
TARGETS = ("a photo of a castle on a hill", "a painting of a house on a hill", "a photo of a barn on a hill",
           "a photo of a house on a hill in winter", "a photo of a tree house", "a photo of a red house")


@dataclasses.dataclass(frozen=True)
class Setup:
    """The numbers every implementation runs with."""

    device: str
    dtype: str
    steps: int
    strength: float
    guidance_scale: float
    eta: float
    prompts: int
    warmup: int
    repeat: int

    def sync(self) -> None:
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()


@dataclasses.dataclass
class Row:
    scenario: str
    impl: str
    median_ms: float | None
    memory: str = ""
    note: str = ""


# ---- checkpoints ---------------------------------------------------------------------------------------
def sd14_configs(vocab_size: int, pad_id: int, eos_id: int) -> dict:
    """Stable Diffusion v1.4's architecture, written out (the published configs, minus weights)."""
    unet = {"sample_size": 64, "in_channels": 4, "out_channels": 4, "layers_per_block": 2,
            "block_out_channels": (320, 640, 1280, 1280), "cross_attention_dim": 768, "attention_head_dim": 8,
            "down_block_types": ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            "up_block_types": ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3}
    vae = {"in_channels": 3, "out_channels": 3, "latent_channels": 4, "layers_per_block": 2, "sample_size": 512,
           "block_out_channels": (128, 256, 512, 512), "down_block_types": ("DownEncoderBlock2D",) * 4,
           "up_block_types": ("UpDecoderBlock2D",) * 4, "scaling_factor": 0.18215}
    # vocab_size: SD's is 49408; the built-in tokenizer is smaller, and the embedding table must match it.
    # Only the (cheap) embedding lookup shrinks; every layer that costs time is SD v1.4's.
    text = {"hidden_size": 768, "intermediate_size": 3072, "num_attention_heads": 12, "num_hidden_layers": 12,
            "max_position_embeddings": 77, "hidden_act": "quick_gelu", "projection_dim": 768,
            "vocab_size": vocab_size, "pad_token_id": pad_id, "bos_token_id": vocab_size - 2, "eos_token_id": eos_id}
    return {"unet": unet, "vae": vae, "text": text}


def build_sd14_random(folder: Path) -> Path:
    """A diffusers folder with SD v1.4's architecture and random weights (seeded), built once and cached."""
    if (folder / "model_index.json").is_file():
        return folder
    print(f"building SD v1.4 architecture with random weights in {folder} (once) ...", file=sys.stderr)
    partial = folder.with_name(folder.name + ".partial")  # renamed into place when complete
    shutil.rmtree(partial, ignore_errors=True)
    _sd14_pipeline(partial).save_pretrained(partial, safe_serialization=True)
    os.replace(partial, folder)
    return folder


def _sd14_pipeline(scratch: Path):
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from cyclediff.export.tokenizer_files import write_tokenizer

    write_tokenizer(scratch / "tokenizer")  # the built-in (tiny) tokenizer; save_pretrained rewrites it in place
    tok = CLIPTokenizer.from_pretrained(scratch / "tokenizer")
    cfg = sd14_configs(len(tok), tok.pad_token_id, tok.eos_token_id)
    torch.manual_seed(0)
    return StableDiffusionPipeline(
        vae=AutoencoderKL(**cfg["vae"]).eval(), text_encoder=CLIPTextModel(CLIPTextConfig(**cfg["text"])).eval(),
        tokenizer=tok, unet=UNet2DConditionModel(**cfg["unet"]).eval(), safety_checker=None, feature_extractor=None,
        scheduler=DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                                set_alpha_to_one=False, steps_offset=1),
        requires_safety_checker=False)


def engine_dir(args) -> Path:
    """--engine DIR as given; else export the checkpoint into a cache folder (re-runs reuse unchanged models)
    with what the timed backends need: fp16 ONNX graphs for onnxruntime at --dtype fp16, and TensorRT plans
    for tensorrt where TensorRT and a GPU are present (so fp16 rows time fp16 graphs, not fp32 ones)."""
    if args.engine:
        return Path(args.engine)
    from cyclediff.export.pipeline import export
    from cyclediff.export.tiny import cache_root

    root = cache_root() / "bench"
    ckpt = str(build_sd14_random(root / "sd-v1-4-random")) if args.arch == "sd-v1-4" else args.ckpt
    out = root / f"export-{args.arch or Path(ckpt).name}"
    wanted = wanted_backends(args)
    fp16 = getattr(args, "dtype", "fp32") == "fp16" and "onnxruntime" in wanted
    print(f"exporting {ckpt} -> {out}{' with fp16 graphs' if fp16 else ''} ...", file=sys.stderr)
    manifest = export(ckpt, out, quiet=True, fp16=fp16)
    if "tensorrt" in wanted and can_build_tensorrt():
        build_plans(out, manifest, getattr(args, "guidance_scale", 7.5) > 1)
    return out


def wanted_backends(args) -> list[str]:
    backends = getattr(args, "backends", None)
    return backends.split(",") if backends else default_backends(getattr(args, "device", "cpu"),
                                                                  getattr(args, "dtype", "fp32"))


def can_build_tensorrt() -> bool:
    from cyclediff.export.plan_cache import TensorRTUnavailable, require_tensorrt

    try:
        require_tensorrt(need_builder=True)
    except TensorRTUnavailable as err:
        print(f"note: no TensorRT plans: {err}", file=sys.stderr)
        return False
    return True


def build_plans(folder: Path, manifest, guided: bool) -> None:
    """fp16 plans for what this benchmark runs: batch 1 at the checkpoint's size, the Engine's default chunk."""
    from cyclediff.export.plan_cache import Workload
    from cyclediff.export.tensorrt_build import build_all

    size = manifest.sample_size
    workload = Workload(batch=1, height=size, width=size, guided=guided, encoder_chunk=16)
    build_all(folder, manifest, workload, say=lambda msg: print(msg, file=sys.stderr)).save(folder)


def checkpoint_path(folder: Path) -> Path:
    """The diffusers folder the export was made from (a built-in one is rebuilt if its cache was cleared)."""
    from cyclediff.export import tiny
    from cyclediff.export.manifest import Manifest

    rec = Manifest.load(folder, verify_files=False).checkpoint
    path = Path(rec["path"])
    if rec["kind"] == "builtin" and not path.exists():
        path = tiny.materialize(rec["spec"])
    return path


def sample_image(size: int) -> PIL.Image.Image:
    from cyclediff.runtime.cli import sample_path

    return PIL.Image.open(sample_path()).convert("RGB").resize((size, size), resample=PIL.Image.LANCZOS)


# ---- measuring -----------------------------------------------------------------------------------------
@dataclasses.dataclass
class Case:
    """One timed thing: a scenario run by one implementation."""

    scenario: str
    impl: str
    fn: Callable[[], object]
    note: str = ""
    torch_alloc: bool = True  # False: the backend allocates outside torch (ORT, TensorRT)


def timed_ms(fn: Callable[[], object], s: Setup) -> float:
    t0 = time.perf_counter()
    fn()
    s.sync()
    return (time.perf_counter() - t0) * 1e3


def median_ms(fn: Callable[[], object], s: Setup) -> float:
    for _ in range(s.warmup):
        fn()
    s.sync()
    return statistics.median(timed_ms(fn, s) for _ in range(s.repeat))


def measure(cases: list[Case], s: Setup, interleave: bool = False) -> list[Row]:
    """Default: one case after another (warm-up, then `repeat` timed runs). interleave: round-robin over
    the cases, so that on a shared machine every implementation sees the same slow and fast moments. Not
    the default: ONNX Runtime's threads spin after each call and slow the torch case that follows them."""
    return _interleaved(cases, s) if interleave else [_alone(c, s) for c in cases]


def _alone(c: Case, s: Setup) -> Row:
    reset_memory(s)
    ms = median_ms(c.fn, s)
    return Row(c.scenario, c.impl, ms, memory(s, c.torch_alloc), c.note)


def _interleaved(cases: list[Case], s: Setup) -> list[Row]:
    mem = []
    for c in cases:  # warm-up alone: also where each case's peak memory is read
        reset_memory(s)
        for _ in range(max(1, s.warmup)):
            c.fn()
        s.sync()
        mem.append(memory(s, c.torch_alloc))
    times: list[list[float]] = [[] for _ in cases]
    for _ in range(s.repeat):
        for i, c in enumerate(cases):
            times[i].append(timed_ms(c.fn, s))
    return [Row(c.scenario, c.impl, statistics.median(t), m, c.note) for c, t, m in zip(cases, times, mem)]


_RESIDENT = [0]  # bytes allocated when the peak was last reset: every loaded pipeline's weights


def reset_memory(s: Setup) -> None:
    if s.device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        _RESIDENT[0] = torch.cuda.memory_allocated()


def memory(s: Setup, torch_alloc: bool = True) -> str:
    """cuda: the case's working memory, torch's allocator peak minus what was resident at the reset (every
    implementation is loaded at once here, so a plain peak would hold all their weights; benchmarks/gpu_key.py
    loads each alone and counts its weights too). ORT/TensorRT allocate outside torch: device-wide use instead.
    CPU: max RSS."""
    if s.device.startswith("cuda"):
        if not torch_alloc:
            free, total = torch.cuda.mem_get_info()
            return f"{(total - free) / 2**20:.0f} MiB dev used"
        return f"+{(torch.cuda.max_memory_allocated() - _RESIDENT[0]) / 2**20:.0f} MiB working"
    return f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB maxrss"


def generator() -> torch.Generator:
    return torch.Generator().manual_seed(0)


# ---- diffusers -----------------------------------------------------------------------------------------
def load_diffusers(path: Path, s: Setup, dtype: str | None = None):
    from diffusers import CycleDiffusionPipeline
    from diffusers.utils import logging as dlog

    dlog.set_verbosity_error()
    pipe = CycleDiffusionPipeline.from_pretrained(path, safety_checker=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(s.device, {"fp16": torch.float16, "bf16": torch.bfloat16}.get(dtype or s.dtype, torch.float32))


def diffusers_cases(pipe, image, s: Setup, label: str = "diffusers", only_first: bool = False) -> list[Case]:
    def edit(prompt: str = TARGETS[0]):
        return pipe(prompt=prompt, source_prompt=SOURCE, image=image, strength=s.strength,
                    num_inference_steps=s.steps, guidance_scale=s.guidance_scale, eta=s.eta, generator=generator())

    cases = [Case("(a) first edit", label, edit)]
    if not only_first:  # (b) has no diffusers case: without a cache it is (a) again (copied in main)
        cases.append(Case(SCENARIO_C.format(n=s.prompts), label, lambda: [edit(p) for p in TARGETS[: s.prompts]],
                          f"{s.prompts} full edits"))
    return cases


def compile_cases(path: Path, image, s: Setup) -> list[Case | Row]:
    """A second pipeline with torch.compile(unet); probed once, so a missing toolchain is a row, not a crash."""
    pipe = load_diffusers(path, s)
    pipe.unet = torch.compile(pipe.unet)
    cases = diffusers_cases(pipe, image, s, "diffusers + torch.compile", only_first=True)
    try:
        cases[0].fn()
    except Exception as err:  # noqa: BLE001 -- inductor needs a C++/Triton toolchain; report, don't abort
        return [Row("(a) first edit", cases[0].impl, None, note=f"failed: {_one_line(err)[:90]}")]
    return cases


# ---- cyclediff -----------------------------------------------------------------------------------------
def load_engine(folder: Path, backend: str, s: Setup):
    """backend: a name, or 'name:dtype' to run that backend in another dtype than --dtype ('openvino:bf16')."""
    from cyclediff.runtime.engine import Engine

    backend, _, dtype = backend.partition(":")
    dtype = dtype or s.dtype
    kwargs = {"backend": backend, "device": s.device, "progress": False}
    if dtype != "fp32":
        if "dtype" in inspect.signature(Engine.load).parameters:
            kwargs["dtype"] = dtype
        else:
            print(f"note: the {dtype} cyclediff path is not available yet; {backend} runs fp32", file=sys.stderr)
    return Engine.load(folder, **kwargs)


def cyclediff_cases(engine, image, s: Setup) -> list[Case]:
    label, torch_alloc = engine_label(engine), engine.backend == "torch"

    def encode():
        return engine.encode(image, SOURCE, strength=s.strength, num_inference_steps=s.steps, eta=s.eta,
                             generator=generator())

    def decode(code, prompt: str = TARGETS[0]):
        return engine.decode(code, prompt, guidance_scale=s.guidance_scale)

    def fan_out():  # the point of a LatentCode: one encoding serves every target prompt
        shared = encode()
        return [decode(shared, p) for p in TARGETS[: s.prompts]]

    cached = encode()
    return [Case("(a) first edit", label, lambda: decode(encode()), "", torch_alloc),
            Case("(b) repeat edit", label, lambda: decode(cached), "decode only", torch_alloc),
            Case(SCENARIO_C.format(n=s.prompts), label, fan_out, f"1 encode + {s.prompts} decodes", torch_alloc)]


def engine_label(engine) -> str:
    """'cyclediff openvino', with the dtype where it is not fp32: 'cyclediff openvino bf16'."""
    dtype = getattr(engine.config, "dtype", "fp32")
    return f"cyclediff {engine.backend}" + (f" {dtype}" if dtype != "fp32" else "")


def stage_times(engine, image, s: Setup) -> dict[str, float]:
    """Per-stage medians from the Engine's own components (each run alone, same shapes as an edit)."""
    from cyclediff.export.specs import TEXT_ENCODER, VAE_DECODER, VAE_ENCODER
    from cyclediff.runtime.core.images import preprocess
    from cyclediff.runtime.core.schedule import StepTable
    from cyclediff.runtime.methods.cycle.decoder import TargetText
    from cyclediff.runtime.methods.cycle.encoder import SourceText

    d, dev, run = engine.manifest.dims, engine.device, engine.runners
    table = StepTable.build(engine.scheduler, s.steps, s.strength, s.eta)
    k = table.num_steps
    pixels = preprocess(image, d.vae_scale, d.latent_channels).tensor.to(dev)
    lat = (1, d.latent_channels, pixels.shape[2] // d.vae_scale, pixels.shape[3] // d.vae_scale)
    ids = engine.prompts.token_ids([SOURCE]).to(dev)
    spec = run[TEXT_ENCODER].spec.outputs[0]
    states = torch.empty((1, *spec.shape[1:]), device=dev)
    cond = engine.prompts.encode([SOURCE])
    text = TargetText(cond, engine.prompts.encode([""]), s.guidance_scale) if s.guidance_scale > 1 else \
        TargetText(cond, None, s.guidance_scale)
    x = torch.randn(lat, device=dev)
    xs, noises = torch.randn((k + 1, *lat), device=dev), torch.randn((k, *lat), device=dev)
    moments = {t.name: torch.empty(lat, device=dev) for t in run[VAE_ENCODER].spec.outputs}
    out = torch.empty((1, 3, pixels.shape[2], pixels.shape[3]), device=dev)
    quick = dataclasses.replace(s, warmup=max(1, s.warmup // 2))
    from cyclediff.runtime.core.buffers import BufferPool

    pool = BufferPool(dev)  # the stage timings' own workspace; UNet calls still go through the dispatcher
    encoder, decoder = engine.make_encoder(pool), engine.make_decoder(pool)
    return {
        "text encoder (1 prompt)": median_ms(lambda: run[TEXT_ENCODER]({"input_ids": ids}, {spec.name: states}), quick),
        "VAE encode": median_ms(lambda: run[VAE_ENCODER]({"image": pixels}, moments), quick),
        f"DPM-Encoder UNet ({k} steps, batched)":
            median_ms(lambda: encoder.source_eps(xs, table, SourceText(cond, None, 1.0)), quick),
        "decoder, per step": median_ms(lambda: decoder.run(x, noises, table, text), quick) / k,
        "VAE decode": median_ms(lambda: run[VAE_DECODER]({"latent": x}, {"image": out}), quick),
    }


def safe_stage_times(engine, image, s: Setup) -> dict[str, float]:
    """The breakdown feeds fp32 buffers straight to the runners; a backend that wants other dtypes (fp16
    engines) or a changed component interface shows n/a instead of ending the run after the main table."""
    try:
        return stage_times(engine, image, s)
    except (TypeError, ValueError, RuntimeError, KeyError) as err:
        print(f"note: no stage breakdown for {engine.backend}: {_one_line(err)[:120]}", file=sys.stderr)
        return {}


# ---- report --------------------------------------------------------------------------------------------
def print_rows(rows: list[Row]) -> None:
    base = {r.scenario: r.median_ms for r in rows if r.impl == "diffusers"}
    print(f"\n{'scenario':<24} {'implementation':<26} {'median ms':>10} {'vs diffusers':>13}  {'memory':<22} note")
    for r in rows:
        ms = f"{r.median_ms:10.1f}" if r.median_ms is not None else f"{'-':>10}"
        ratio = base.get(r.scenario)
        speed = f"{ratio / r.median_ms:12.2f}x" if ratio and r.median_ms else f"{'-':>13}"
        print(f"{r.scenario:<24} {r.impl:<26} {ms} {speed}  {r.memory:<22} {r.note}")
    print("vs diffusers = diffusers' median / this median (higher is faster)")


def print_stages(stages: dict[str, dict[str, float]]) -> None:
    names = list(dict.fromkeys(n for times in stages.values() for n in times))
    if not names:
        return
    print(f"\n{'stage (ms)':<40}" + "".join(f"{b:>26}" for b in stages))
    for n in names:
        print(f"{n:<40}" + "".join(f"{stages[b][n]:26.2f}" if n in stages[b] else f"{'n/a':>26}" for b in stages))


# ---- main ----------------------------------------------------------------------------------------------
def default_backends(device: str, dtype: str = "fp32") -> list[str]:
    """What runs `dtype` on `device`: bf16 on openvino and torch; fp32 on every CPU backend; TensorRT on CUDA."""
    if dtype == "bf16":
        return ["torch", "openvino"]
    backends = ["torch", "onnxruntime"] + (["openvino"] if device == "cpu" and _has_openvino() else [])
    if device.startswith("cuda"):
        try:
            import tensorrt  # noqa: F401
            backends.append("tensorrt")
        except ImportError:
            pass
    return backends


def _has_openvino() -> bool:
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


def add_checkpoint_args(p: argparse.ArgumentParser, engine_help: str = "reuse this export directory") -> None:
    """--ckpt | --arch | --engine: what engine_dir() exports or reuses (shared by the benchmark scripts)."""
    src = p.add_mutually_exclusive_group()
    src.add_argument("--ckpt", default="tiny", help="checkpoint to export (default: built-in tiny)")
    src.add_argument("--arch", choices=["sd-v1-4"], help="SD v1.4's architecture with random weights (cached)")
    src.add_argument("--engine", help=engine_help)


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_checkpoint_args(p, "reuse this export directory (its checkpoint runs the diffusers rows)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", choices=["fp32", "fp16", "bf16"], default="fp32",
                   help="fp16 needs --device cuda; bf16 (CPU) times openvino and torch against diffusers in bf16")
    p.add_argument("--backends", help="comma-separated cyclediff backends, each optionally backend:dtype "
                                      "(default: torch,onnxruntime[,openvino][,tensorrt])")
    p.add_argument("--steps", type=int, help="num_inference_steps (default: 50 on cuda, 10 on cpu: keeps the CPU run near 2 minutes)")
    p.add_argument("--strength", type=float, default=0.8)
    p.add_argument("--guidance-scale", type=float, default=7.5)
    p.add_argument("--eta", type=float, default=0.1)
    p.add_argument("--prompts", type=int, default=4, help="target prompts in scenario (c) (max 6)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeat", type=int, default=10)
    p.add_argument("--diffusers-dtypes", metavar="LIST",
                   help="also time diffusers in these dtypes (e.g. bf16), first edit only, beside --dtype's")
    p.add_argument("--threads", type=int, help="torch.set_num_threads (ONNX Runtime keeps its own default)")
    p.add_argument("--compile", action="store_true", help="add a diffusers + torch.compile(unet) row")
    p.add_argument("--interleave", action="store_true",
                   help="time the cases round-robin (fairer under shifting load; see measure())")
    p.add_argument("--no-stages", action="store_true", help="skip the per-stage breakdown")
    p.add_argument("--json", help="also write the rows and the stage times to this file")
    args = p.parse_args(argv)
    if args.warmup < 0 or args.repeat < 1 or not 1 <= args.prompts <= len(TARGETS):
        p.error(f"need --warmup >= 0, --repeat >= 1 and 1 <= --prompts <= {len(TARGETS)}")
    if args.dtype == "fp16" and not args.device.startswith("cuda"):
        p.error("--dtype fp16 needs --device cuda")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    s = Setup(args.device, args.dtype, args.steps or (50 if args.device.startswith("cuda") else 10), args.strength,
              args.guidance_scale, args.eta, args.prompts, args.warmup, args.repeat)
    if args.threads:
        torch.set_num_threads(args.threads)
    folder = engine_dir(args)
    from cyclediff.export.manifest import Manifest

    image = sample_image(Manifest.load(folder, verify_files=False).sample_size)
    print(f"engine {folder}  device {s.device}  dtype {s.dtype}  image {image.size[0]}px  steps {s.steps}  "
          f"strength {s.strength}  warmup {s.warmup}  repeat {s.repeat}  torch threads {torch.get_num_threads()}")
    ckpt = checkpoint_path(folder)
    engines, skipped = load_engines(folder, s, args)
    cases: list = diffusers_cases(load_diffusers(ckpt, s), image, s)
    for dtype in args.diffusers_dtypes.split(",") if args.diffusers_dtypes else ():  # more diffusers rows
        cases += diffusers_cases(load_diffusers(ckpt, s, dtype), image, s, f"diffusers {dtype}", only_first=True)
    cases += [c for e in engines for c in cyclediff_cases(e, image, s)]
    cases += compile_cases(ckpt, image, s) if args.compile else []
    rows = with_diffusers_b(measure([c for c in cases if isinstance(c, Case)], s, args.interleave))
    rows = rows + skipped + [c for c in cases if isinstance(c, Row)]
    print_rows(rows)
    stages: dict[str, dict[str, float]] = {}
    mfu: dict[str, str] = {}
    if not args.no_stages:
        stages = {engine_label(e): safe_stage_times(e, image, s) for e in engines}
        print_stages(stages)
        mfu = print_mfu(engines, stages, image, s)
    if args.json:
        write_json(Path(args.json), s, rows, stages, mfu)
    return 0


def write_json(path: Path, s: Setup, rows: list[Row], stages: dict[str, dict[str, float]],
               mfu: dict[str, str]) -> None:
    import json

    device = torch.cuda.get_device_name() if s.device.startswith("cuda") else "cpu"
    path.write_text(json.dumps({"setup": dataclasses.asdict(s), "device_name": device,
                                "rows": [dataclasses.asdict(r) for r in rows], "stages_ms": stages, "mfu": mfu}, indent=1))


def print_mfu(engines: list, stages: dict[str, dict[str, float]], image, s: Setup) -> dict[str, str]:
    """MFU of each engine's decoder step against a matmul peak of its dtype measured now on the same device (on
    the CPU the best that torch or OpenVINO reaches); returns the printed line per engine."""
    from mfu import cpu_matmul_peaks, matmul_peak_tflops, report, unet_step_tflop, unet_step_tflops

    if not engines:
        return {}
    batch = 2 if s.guidance_scale > 1 else 1
    counted = [e for e in engines if e.backend == "torch"]
    d = engines[0].manifest.dims
    hw = (image.size[1] // d.vae_scale, image.size[0] // d.vae_scale)
    if counted:
        tflop = unet_step_tflop(counted[0], batch, hw)
    else:  # no torch module loaded: count on the checkpoint's UNet (square images)
        tflop = unet_step_tflops(str(checkpoint_path(engines[0].folder)), (image.size[0],), batch)[image.size[0]]
    if s.device == "cpu":
        found = cpu_matmul_peaks()
        peaks = {dt: max(v for k, v in found.items() if k.endswith(dt)) for dt in ("fp32", "bf16")}
    else:
        peaks = {s.dtype: matmul_peak_tflops(s.device, torch.float16 if s.dtype == "fp16" else torch.float32)}
    lines = {}
    for e in engines:
        label, dtype = engine_label(e), getattr(e.config, "dtype", "fp32")
        step = stages.get(label, {}).get("decoder, per step")
        if tflop and step and dtype in peaks:
            lines[label] = report(step, tflop, peaks[dtype])
            print(f"{label:<26} " + lines[label])
    return lines


def load_engines(folder: Path, s: Setup, args) -> tuple[list, list[Row]]:
    backends = wanted_backends(args)
    engines, skipped = [], []
    for backend in backends:
        try:
            engines.append(load_engine(folder, backend, s))
        except (ImportError, ValueError, RuntimeError) as err:  # a backend this machine cannot run: say why
            skipped.append(Row("(a) first edit", f"cyclediff {backend}", None, note=f"skipped: {_one_line(err)}"))
    return engines, skipped


def with_diffusers_b(rows: list[Row]) -> list[Row]:
    """diffusers has no encoding cache: its (b) is its (a)."""
    first = next(r for r in rows if r.impl == "diffusers" and r.scenario.startswith("(a)"))
    b = Row("(b) repeat edit", "diffusers", first.median_ms, first.memory, "no cache: a full edit")
    return rows[:1] + [b] + rows[1:]


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


if __name__ == "__main__":
    sys.exit(main())
