"""`cyclediff-export`: command-line entry point of the export stage (argparse lives only here)."""
from __future__ import annotations

import argparse
import sys

PROG = "cyclediff-export"
EPILOG = """\
examples:
  cyclediff-export --ckpt tiny --out out/tiny                 # built-in random tiny checkpoint (offline, seconds)
  cyclediff-export --ckpt sd-v1-4 --out out/sd14              # alias of CompVis/stable-diffusion-v1-4 (HF cache)
  cyclediff-export --ckpt ~/models/sd15 --out out/sd15        # a diffusers folder
  cyclediff-export --ckpt v1-5.safetensors --config ~/models/sd15 --out out/v15
                                                              # single file; --config gives configs + tokenizer

  cyclediff-export --verify out/sd14                          # sha256 of every file the manifest records

Re-running into the same --out reuses every model whose file is unchanged (see .export-state.json);
another checkpoint replaces the folder's contents. manifest.json is written last: a folder whose export
did not finish is refused by every runtime until the export is re-run.
"""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Export a Stable Diffusion v1.x checkpoint to verified ONNX models + manifest.json.",
    )
    p.add_argument("--ckpt", metavar="CKPT",
                   help="diffusers folder, .safetensors/.ckpt file, hub id (owner/name, from the local HF cache), "
                        "alias (sd-v1-4, sd-v1-5) or built-in (tiny, tiny-deep, tiny-trailing)")
    p.add_argument("--out", metavar="DIR", help="export folder (created; reused on re-runs)")
    p.add_argument("--verify", metavar="DIR",
                   help="instead of exporting: check every file of export DIR against its recorded sha256 (reads "
                        "every byte; a load only compares sizes and sampled blocks)")
    p.add_argument("--config", metavar="DIR_OR_ID",
                   help="single-file checkpoints only: diffusers folder or hub id of the same architecture")
    p.add_argument("--lora", action="append", default=[], metavar="FILE[:SCALE]",
                   help="fuse this LoRA into the weights (diffusers' load_lora_weights + fuse_lora: diffusers/peft "
                        "or community .safetensors); SCALE default 1; repeatable, fused in order")
    p.add_argument("--opset", type=int, default=18, help="ONNX opset, 17..20 (default: 18)")
    p.add_argument("--trace-size", type=int, default=None, metavar="N",
                   help="latent side used for tracing (default: twice the UNet's downsampling factor, 16 for SD)")
    p.add_argument("--exporter", choices=("auto", "legacy", "dynamo"), default="auto",
                   help="torch.onnx exporter; auto tries legacy (fast) then dynamo (default: auto)")
    p.add_argument("--force", action="store_true", help="re-export every model even if its file is reusable")
    p.add_argument("--fp16", action="store_true",
                   help="also write fp16 ONNX graphs (norms, softmax and I/O kept fp32) for "
                        "`Engine.load(..., backend='onnxruntime', dtype='fp16')`")
    p.add_argument("--attention-maps", action="store_true",
                   help="also write unet_attn.onnx: the UNet with its cross-attention probabilities as outputs, so "
                        "Pix2Pix-Zero's reference pass runs on ONNX Runtime (a second copy of the UNet weights)")
    p.add_argument("--torch-only", action="store_true",
                   help="graphs for the torch backend only: skip the ONNX Runtime parity run, the attention fusion, "
                        "the ORT-optimized copies and the OpenVINO IR (minutes at SD size); other backends refuse "
                        "the export")
    p.add_argument("--torchscript", action="store_true",
                   help="also write TorchScript programs for the C++ library's CPU executor (libcyclediff)")
    trt = p.add_argument_group("TensorRT (fp16 plans with static shapes for the runtime's exact workload)")
    trt.add_argument("--trt", action=argparse.BooleanOptionalAction, default=None,
                     help="build TensorRT plans (default: yes when TensorRT and an NVIDIA GPU are present)")
    trt.add_argument("--batch", type=int, default=1, help="images per edit the plans serve (default 1)")
    trt.add_argument("--height", type=int, default=None, help="image height in pixels (default: checkpoint's native)")
    trt.add_argument("--width", type=int, default=None, help="image width in pixels (default: checkpoint's native)")
    trt.add_argument("--no-guidance", action="store_true", help="plans for guidance_scale <= 1 (decoder batch B)")
    trt.add_argument("--max-batch", type=int, default=16, help="the Engine's encoder chunk (default 16)")
    p.add_argument("--quiet", action="store_true", help="no progress bar or messages; errors only")
    p.add_argument("--verbose", action="store_true",
                   help="also show the libraries' own warnings (onnxruntime, transformers, diffusers)")
    return p


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    if args.verify:
        return _verify(args.verify, args.quiet)
    if not args.ckpt or not args.out:
        p.error("--ckpt and --out are required (or --verify DIR)")
    from cyclediff.export.writable import check_writable

    try:
        check_writable(args.out, "--out")  # in a second, before torch is imported (run() checks again)
    except ValueError as err:
        return _fail(err, 2)
    from cyclediff.runtime import verbosity  # one line per real problem; --verbose: the libraries' warnings too

    verbosity.configure(PROG, args.verbose)
    # Imported after parsing so that --help answers without loading torch.
    from cyclediff.export.onnx_export import ExportError, ExportSettings
    from cyclediff.export.pipeline import exporter_order, run
    from cyclediff.export.plan_cache import TensorRTUnavailable

    try:
        if args.torch_only and args.trt:
            raise ValueError("--trt builds TensorRT plans from graphs that a --torch-only export never verifies; "
                             "drop one of them")
        build_trt = _want_tensorrt(args.trt)  # fails fast when --trt is asked for without TensorRT or a GPU
        settings = ExportSettings(opset=args.opset, exporters=exporter_order(args.exporter),
                                  trace_size=args.trace_size, ort_attention=not build_trt,
                                  torch_only=args.torch_only)
        report = run(args.ckpt, args.out, config=args.config, settings=settings, quiet=args.quiet,
                     force=args.force, torchscript=args.torchscript, fp16=args.fp16,
                     attention_maps=args.attention_maps, loras=tuple(args.lora))
        if build_trt:
            _build_plans(args, report.manifest)
    except TensorRTUnavailable as err:
        return _fail(err, 2)
    except ExportError as err:
        return _fail(err, 1)
    except OSError as err:
        return _fail(err, 1)
    except ValueError as err:  # CheckpointError, ManifestError, ScheduleError and bad arguments
        return _fail(err, 2)
    except KeyboardInterrupt:
        return _fail("interrupted; re-run the same command to resume", 130)
    if not args.quiet:
        print(f"exported {args.ckpt} to {args.out}: {len(report.exported)} exported, {len(report.reused)} reused "
              f"({', '.join(report.reused) or 'none'}); manifest {report.manifest.digest[:12]}")
    return 0


def _want_tensorrt(flag: bool | None) -> bool:
    from cyclediff.export.plan_cache import TensorRTUnavailable, require_tensorrt

    if flag is False:
        return False
    try:
        require_tensorrt(need_builder=True)
    except TensorRTUnavailable:
        if flag:
            raise
        return False
    return True


def _build_plans(args: argparse.Namespace, manifest) -> None:
    from pathlib import Path

    from cyclediff.export.plan_cache import Workload
    from cyclediff.export.tensorrt_build import build_all

    workload = Workload(batch=args.batch, height=args.height or manifest.sample_size,
                        width=args.width or manifest.sample_size, guided=not args.no_guidance,
                        encoder_chunk=args.max_batch)
    say = (lambda _msg: None) if args.quiet else print
    build_all(Path(args.out), manifest, workload, say=say).save(Path(args.out))


def _verify(folder: str, quiet: bool) -> int:
    """The full integrity check: 0 when every recorded file matches, 1 naming the first that does not."""
    from pathlib import Path

    from cyclediff.export.integrity import verify_all
    from cyclediff.export.manifest import Manifest, ManifestError

    try:
        manifest = Manifest.load(folder, verify_files=False)
        groups = verify_all(Path(folder), manifest)
    except ManifestError as err:
        return _fail(err, 1)
    except OSError as err:
        return _fail(err, 1)
    if not quiet:
        files = sum(len(g.files) for g in groups)
        print(f"verified {folder}: {files} files ({len(groups)} groups) match their recorded sha256")
    return 0


def _fail(err: object, code: int) -> int:
    print(f"{PROG}: error: {err}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
