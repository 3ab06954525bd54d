"""`cyclediff-serve`: serve edits over HTTP with Ray Serve, on an embedded local Ray or on an existing cluster."""
from __future__ import annotations

import argparse
import signal
import socket
import sys
import time
from pathlib import Path

from cyclediff.runtime.cli import CliError
from cyclediff.runtime.core.config import BACKENDS, DTYPES
from cyclediff.serve.config import EngineSpec, Limits, Scaling

PROG = "cyclediff-serve"
# The Serve config file, shipped next to this module (pyproject package-data): its path where cyclediff is installed.
CONFIG_FILE = Path(__file__).with_name("serve.yaml")
EXAMPLE = f"""\
examples:
  cyclediff-serve --engine exports/tiny                       # local Ray, http://127.0.0.1:8000
  curl -s -F image=@house.png -F source_prompt="a house" -F prompt="a castle" -F seed=0 \\
      http://127.0.0.1:8000/v1/edit -o castle.png
  cyclediff-serve --engine /shared/exports/sd14 --address auto --host 0.0.0.0 \\
      --min-replicas 1 --max-replicas 8 --device cuda --dtype fp16 --num-gpus-per-replica 0.5

The API is described at http://HOST:PORT/docs. Ctrl-C (or SIGTERM) stops the service; with the embedded Ray
it also stops Ray. A cluster deployment from a file: copy the Serve config {CONFIG_FILE},
set its args (engine: the export's path on every node), then `serve deploy serve.yaml` (see README).
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter,
                                description="HTTP edit service (CycleDiffusion) on Ray Serve: a web page at /; "
                                            "POST /v1/edit, /v1/encode, /v1/decode, /v1/jobs; GET /v1/info, "
                                            "/health.")
    p.add_argument("--engine", required=True, metavar="DIR", help="export directory (from cyclediff-export)")
    p.add_argument("--decoder-engine", metavar="DIR",
                   help="a second export every replica loads (a fine-tune of --engine's checkpoint, or it with a "
                        "LoRA fused): /v1/edit and /v1/decode requests with decoder=true decode with it")
    _network_flags(p.add_argument_group("where it runs"))
    _scaling_flags(p.add_argument_group("replicas (each loads one Engine; Serve restarts one that dies)"))
    _engine_flags(p.add_argument_group("engine (per replica, as Engine.load)"))
    _limit_flags(p.add_argument_group("request limits (past them: 4xx, 413, 503 or 504)"))
    p.add_argument("--verbose", action="store_true", help="show Ray's and the replicas' logs")
    return p


def _network_flags(g) -> None:
    g.add_argument("--host", default="127.0.0.1", help="address the HTTP proxy listens on (default 127.0.0.1: "
                                                      "this machine only; 0.0.0.0 to serve other machines)")
    g.add_argument("--port", type=int, default=8000, help="HTTP port (default 8000)")
    g.add_argument("--address", metavar="auto|ray://HOST:PORT",
                   help="join an existing Ray cluster (auto: the one started on this machine by `ray start`) "
                        "instead of starting an embedded local Ray (default; its node address is 127.0.0.1)")
    g.add_argument("--num-cpus", type=int, help="embedded Ray only: CPUs it may schedule (default: this "
                                               "machine's cores, or more if the replicas ask for more)")
    g.add_argument("--object-store-mb", type=int, default=128,
                   help="embedded Ray only: its shared-memory object store (default 128 MB; requests do not use it)")


def _scaling_flags(g) -> None:
    g.add_argument("--replicas", type=int, default=1, help="fixed number of replicas (default 1)")
    g.add_argument("--min-replicas", type=int, help="autoscaling: fewest replicas (with --max-replicas)")
    g.add_argument("--max-replicas", type=int, help="autoscaling: most replicas (with --min-replicas)")
    g.add_argument("--target-ongoing-requests", type=float, default=4.0,
                   help="autoscaling: requests per replica it aims for (default 4)")
    g.add_argument("--num-cpus-per-replica", type=float, default=1.0,
                   help="CPUs Ray reserves per replica (default 1; Ray sets the replica's OMP_NUM_THREADS to it)")
    g.add_argument("--num-gpus-per-replica", type=float, default=None,
                   help="GPUs per replica; fractions share one GPU (0.5: two replicas per GPU). Default: 1 with "
                        "--device cuda, else 0")
    g.add_argument("--max-queued-requests", type=int, default=32,
                   help="requests waiting in each replica beyond the --max-concurrency running; past it: "
                        "503 + Retry-After, at once (default 32)")
    g.add_argument("--retry-after", type=float, default=1.0, metavar="S",
                   help="Retry-After seconds sent with a 503 (default 1)")


def _engine_flags(g) -> None:
    g.add_argument("--backend", choices=BACKENDS, default="auto")
    g.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N (default cpu)")
    g.add_argument("--dtype", choices=DTYPES, default="fp32", help="fp32 | fp16 (CUDA) | bf16 (the fast CPU mode: "
                                                                  "openvino or torch)")
    g.add_argument("--threads", type=int, help="intra-op CPU threads per replica (default: "
                                               "--num-cpus-per-replica)")
    g.add_argument("--max-batch", type=int, default=16, help="largest merged UNet batch (default 16)")
    g.add_argument("--batch-wait-ms", type=float, default=5.0,
                   help="how long a UNet call waits to merge with other requests' (default 5)")
    g.add_argument("--max-concurrency", type=int, default=8,
                   help="requests one replica runs at once, batched together by its Engine (default 8)")


def _limit_flags(g) -> None:
    g.add_argument("--request-timeout", type=float, default=300.0, metavar="S",
                   help="a request running longer is stopped and answered 504 (default 300 s); a request's "
                        "timeout_s field may ask for less")
    g.add_argument("--max-body-mb", type=float, default=16.0, help="largest request body; past it: 413 "
                                                                   "(default 16)")
    g.add_argument("--max-side", type=int, default=2048, help="largest image side in pixels (default 2048)")
    g.add_argument("--max-prompts", type=int, default=8, help="most target prompts per request (default 8)")
    g.add_argument("--max-steps", type=int, default=1000, help="largest num_inference_steps (default 1000)")
    g.add_argument("--job-results", type=int, default=64, metavar="N",
                   help="finished jobs (POST /v1/jobs) each replica keeps for GET; the oldest go first (default 64)")
    g.add_argument("--job-ttl", type=float, default=600.0, metavar="S",
                   help="and for at most this long after they finish (default 600 s)")


def configs(args: argparse.Namespace) -> tuple[EngineSpec, Limits, Scaling]:
    """The command line as the three frozen configurations (their checks become CliErrors)."""
    gpus = args.num_gpus_per_replica
    if gpus is None:
        gpus = 1.0 if args.device.startswith("cuda") else 0.0
    threads = args.threads if args.threads is not None else max(1, int(args.num_cpus_per_replica))
    try:
        spec = EngineSpec(str(Path(args.engine).resolve()), args.backend, args.device, args.dtype, threads,
                          args.max_batch, args.batch_wait_ms, args.max_concurrency,
                          str(Path(args.decoder_engine).resolve()) if args.decoder_engine else None)
        limits = Limits(int(args.max_body_mb * 2**20), args.max_side, args.max_prompts, max_steps=args.max_steps,
                        request_timeout_s=args.request_timeout, job_results=args.job_results,
                        job_ttl_s=args.job_ttl)
        scaling = Scaling(args.replicas, args.min_replicas, args.max_replicas, args.target_ongoing_requests,
                          args.num_cpus_per_replica, gpus, args.max_queued_requests, args.retry_after)
    except ValueError as err:
        raise CliError(str(err)) from None
    return spec, limits, scaling


def check_engine(folder: str, backend: str = "auto", decoder: str | None = None) -> None:
    """Fail before Ray starts: a wrong --engine or --decoder-engine, a damaged export, a decoder in another latent
    space (see export_check.py)."""
    from cyclediff.export.manifest import ManifestError
    from cyclediff.serve.export_check import check_decoder, check_export

    try:
        manifest = check_export(folder, backend)
        if decoder is not None:
            check_decoder(manifest, decoder, backend)
    except ManifestError as err:
        raise CliError(str(err)) from None


def check_port(host: str, port: int) -> None:
    if not 0 < port < 65536:
        raise CliError(f"--port must be in 1..65535, got {port}")
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError as err:
            raise CliError(f"cannot listen on {host}:{port} ({err.strerror}); pass another --port or --host") \
                from None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        spec, limits, scaling = configs(args)
        check_engine(spec.folder, spec.backend, spec.decoder_engine)
        if args.address is None:
            check_port(args.host, args.port)
    except CliError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 2
    from cyclediff.serve.cluster import Cluster

    # SIGTERM stops it as Ctrl-C does, at any point, so that the embedded Ray is always shut down. Again after
    # Ray starts: its core worker installs a handler that aborts the process (orphaning Ray's agents).
    _on_signals(_interrupt)
    cluster = Cluster(args.address, args.num_cpus, args.object_store_mb, args.verbose)
    try:
        cluster.start(scaling, args.host, args.port)
        _on_signals(_interrupt)
        url = cluster.deploy(spec, limits, scaling)
        print(f"{PROG}: serving {args.engine} at {url} ({_replicas(scaling)}); API at {url}/docs; Ctrl-C stops",
              file=sys.stderr, flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print(f"{PROG}: stopping", file=sys.stderr, flush=True)
    except Exception as err:  # noqa: BLE001 - deployment failures arrive as Ray's RuntimeErrors; one line, non-zero exit
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 1
    finally:
        cluster.stop()
    return 0


def _replicas(scaling: Scaling) -> str:
    if scaling.autoscaling:
        return f"{scaling.min_replicas}-{scaling.max_replicas} replicas, autoscaling"
    return f"{scaling.replicas} replica{'s' if scaling.replicas > 1 else ''}"


def _interrupt(*_) -> None:
    raise KeyboardInterrupt


def _on_signals(handler) -> None:
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, handler)


if __name__ == "__main__":
    sys.exit(main())
