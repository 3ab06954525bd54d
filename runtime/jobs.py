"""`cyclediff-run --jobs FILE.jsonl`: many edits in one process, on one shared Engine, each job all-or-nothing.

Every line is validated before the engine loads; a bad line is reported with its number and skipped. The
valid jobs run from a thread pool (`--concurrency`) calling the one Engine, which serializes or batches the
concurrent calls itself. Each job's files are checked before any compute and committed together.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import json
import math
import sys
import threading
import time
from pathlib import Path
from typing import Any

import PIL.Image

from cyclediff.runtime import cli
from cyclediff.runtime.core.cancel import Cancelled, cancel_scope
from cyclediff.runtime.core.checks import InvalidArgument, check_choice, check_edit_steps, check_number, check_seed
from cyclediff.runtime.core.config import PRESETS, EditParams
from cyclediff.runtime.outputs import OutputSet

KEYS = ("image", "source_prompt", "prompt", "out", "settings")
_NUMBERS = ("strength", "guidance_scale", "source_guidance_scale", "eta")  # EditParams fields, any real number
_INTEGERS = ("num_inference_steps", "seed", "clip_skip")
SETTINGS = (*_NUMBERS, *_INTEGERS, "preset")
# Flags of the single-edit mode that a jobs file gives per line instead.
_PER_LINE_FLAGS = ("image", "source_prompt", "prompt", "out", "code", "save_code", "grid")


class LineError(ValueError):
    """A jobs-file line that cannot run; the message says which key and why."""


@dataclasses.dataclass(frozen=True)
class Job:
    line: int
    image: str  # a file path (resolved against the jobs file's folder) or cli.SAMPLE
    source_prompt: str
    prompts: tuple[str, ...]
    out: str  # as written in the line, for the summary
    outs: tuple[Path, ...]  # the files it writes: out, or out_0 ... out_{N-1} for N prompts
    params: EditParams
    seed: int | None
    clip_skip: int | None


@dataclasses.dataclass(frozen=True)
class Result:
    line: int
    out: str
    status: str  # "ok" | "bad line" | "failed" | "cancelled"
    seconds: float | None = None
    error: str | None = None


def main(args: argparse.Namespace) -> int:
    """0: every line ran; 1: some line was bad or failed; a bad command line raises CliError (exit 2)."""
    _check_flags(args)
    path = Path(args.jobs)
    jobs, bad = parse_file(path, cli_defaults(args))
    for result in bad:
        _report(path, result)
    results = list(bad)
    if jobs:
        engine = cli.load_engine(args, progress=False)
        decoder = cli.load_decoder(args, engine, progress=False)
        results += run_all(engine, jobs, args.concurrency, quiet=args.quiet, name=path, decoder=decoder)
    results.sort(key=lambda r: r.line)
    if not args.quiet or any(r.status != "ok" for r in results):
        print(summary(results))
    if any(r.status == "cancelled" for r in results):
        print(f"{cli.PROG}: interrupted; the jobs marked cancelled wrote nothing", file=sys.stderr)
        return 130
    return 0 if results and all(r.status == "ok" for r in results) else 1


def _check_flags(args: argparse.Namespace) -> None:
    given = [f"--{f.replace('_', '-')}" for f in _PER_LINE_FLAGS if getattr(args, f) not in (None, False)]
    if given:
        raise cli.CliError(f"{', '.join(given)} cannot be combined with --jobs: each line of the jobs file gives "
                           "its own image, prompts and out")
    cli.edit_params(args)  # the command line's edit flags are every line's defaults: check them once, here


def cli_defaults(args: argparse.Namespace) -> dict[str, Any]:
    """Settings given on the command line, in the jobs file's (diffusers') names."""
    given = {field: getattr(args, dest) for dest, field in cli.PARAM_FLAGS.items() if getattr(args, dest) is not None}
    for key in ("seed", "clip_skip", "preset"):
        if getattr(args, key) is not None:
            given[key] = getattr(args, key)
    return given


# ---- parsing --------------------------------------------------------------------------------------------------
def parse_file(path: Path, defaults: dict[str, Any]) -> tuple[list[Job], list[Result]]:
    """All lines, validated: the runnable jobs, and a 'bad line' result for each line that is not."""
    if not path.is_file():
        raise cli.CliError(f"--jobs {path}: no such file")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise cli.CliError(f"--jobs {path}: cannot read it ({cli.one_line(err)})") from err
    jobs: list[Job] = []
    bad: list[Result] = []
    claimed: dict[Path, int] = {}  # output file -> the line that writes it
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        try:
            job = parse_line(number, text, path.parent, defaults)
            _claim(job, claimed)
            jobs.append(job)
        except ValueError as err:  # LineError, CliError, OutputError (an out that cannot be written): this line's
            bad.append(Result(number, _out_of(text), "bad line", error=cli.one_line(err)))
    if not jobs and not bad:
        raise cli.CliError(f"--jobs {path}: the file has no jobs (one JSON object per line)")
    return jobs, bad


def parse_line(number: int, text: str, folder: Path, defaults: dict[str, Any]) -> Job:
    try:
        spec = json.loads(text)
    except json.JSONDecodeError as err:
        raise LineError(f"not valid JSON ({err.msg} at column {err.colno})") from err
    if not isinstance(spec, dict):
        raise LineError(f"expected a JSON object {{...}}, got {type(spec).__name__}")
    _known(spec, KEYS, "key")
    missing = [k for k in KEYS[:4] if k not in spec]
    if missing:
        raise LineError(f"missing {', '.join(map(repr, missing))} (every line needs {', '.join(KEYS[:4])})")
    prompts = _prompts(spec["prompt"])
    source = _text(spec["source_prompt"], "source_prompt")
    settings = {**defaults, **_settings(spec.get("settings", {}))}
    out = _text(spec["out"], "out")
    outs = cli.image_paths(_resolve(folder, out), len(prompts))
    cli.check_format(outs[0], "out")
    OutputSet(outs).check()
    return Job(number, _image(spec["image"], folder), source, prompts, out, outs, _params(settings),
               settings.get("seed"), settings.get("clip_skip"))


def _known(spec: dict, allowed: tuple[str, ...], what: str) -> None:
    unknown = [k for k in spec if k not in allowed]
    if unknown:
        raise LineError(f"unknown {what} {', '.join(map(repr, unknown))}; expected {', '.join(allowed)}")


def _text(value: Any, key: str) -> str:
    if not isinstance(value, str):
        raise LineError(f"{key} must be a string, got {json.dumps(value)}")
    if key in ("out", "image") and not value.strip():
        raise LineError(f"{key} must name a file, got an empty string")
    if "\x00" in value:
        raise LineError(f"{key} must not contain NUL characters")
    return value


def _prompts(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return (_text(value, "prompt"),)
    if isinstance(value, list) and value:
        return tuple(_text(v, "prompt") for v in value)
    raise LineError(f"prompt must be a string or a non-empty list of strings, got {json.dumps(value)}")


def _settings(value: Any) -> dict[str, Any]:
    """The line's settings, each checked by the request rules (the names are diffusers'); the EditParams fields
    once merged with the command line's defaults, by _params."""
    if not isinstance(value, dict):
        raise LineError(f"settings must be a JSON object, got {json.dumps(value)}")
    _known(value, SETTINGS, "setting")
    try:
        for key, v in value.items():
            if key in (*_NUMBERS, "num_inference_steps"):
                continue  # EditParams' own fields: _params checks them, bounds and type in one message
            if key == "seed":
                check_seed(key, v)
            elif key == "clip_skip":
                check_number(key, v, integer=True, low=0)
            else:
                check_choice(key, v, tuple(sorted(PRESETS)))
    except InvalidArgument as err:
        raise LineError(err.renamed(f"settings.{err.field}")) from None
    return value


def _params(settings: dict[str, Any]) -> EditParams:
    fields = {k: v for k, v in settings.items() if k in (*_NUMBERS, "num_inference_steps")}
    try:
        params = dataclasses.replace(PRESETS[settings.get("preset") or "default"], **fields)
        check_edit_steps(params.num_inference_steps, params.strength)
    except InvalidArgument as err:
        raise LineError(err.renamed(f"settings.{err.field}")) from None
    return params


def _image(value: Any, folder: Path) -> str:
    """A readable image file (its header is read now; the pixels when the job runs), or the bundled sample."""
    spec = _text(value, "image")
    if spec == cli.SAMPLE:
        return spec
    path = _resolve(folder, spec)
    if not path.is_file():
        raise LineError(f"image {spec}: no such file" + (f" ({path})" if str(path) != spec else ""))
    try:
        with PIL.Image.open(path):
            pass
    except (OSError, ValueError, PIL.Image.DecompressionBombError) as err:
        raise LineError(f"image {spec}: not a readable image ({cli.one_line(err)})") from err
    return str(path)


def _resolve(folder: Path, name: str) -> Path:
    path = Path(name).expanduser()
    return path if path.is_absolute() else folder / path


def _claim(job: Job, claimed: dict[Path, int]) -> None:
    for path in job.outs:
        other = claimed.get(path.resolve())
        if other is not None:
            raise LineError(f"out {path} is also written by line {other}; give each line its own out")
    for path in job.outs:
        claimed[path.resolve()] = job.line


def _out_of(text: str) -> str:
    """The out of a bad line, if it can be read at all (for the summary)."""
    try:
        out = json.loads(text).get("out")
    except (json.JSONDecodeError, AttributeError):
        return "?"
    return out if isinstance(out, str) else "?"


# ---- running --------------------------------------------------------------------------------------------------
def run_all(engine, jobs: list[Job], concurrency: int, quiet: bool, name: Path, decoder=None) -> list[Result]:
    """Run the jobs `concurrency` at a time (each decoded by `decoder`, another Engine, when given). On Ctrl-C the running jobs stop at their next model call (their
    cancel_scope sees the stop), the queued ones never start, and none of them writes a file."""
    from tqdm.auto import tqdm

    stop = threading.Event()
    results: list[Result] = []
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="cyclediff-job")
    with tqdm(total=len(jobs), desc="jobs", unit="job", disable=quiet, dynamic_ncols=True) as bar:
        futures = [pool.submit(run_one, engine, job, stop, decoder) for job in jobs]
        try:
            for future in concurrent.futures.as_completed(futures):
                results.append(future.result())
                _report(name, results[-1])
                bar.update(1)
        except KeyboardInterrupt:
            stop.set()
            tqdm.write(f"{cli.PROG}: interrupted; stopping the running jobs at their next model call",
                       file=sys.stderr)
            pool.shutdown(wait=True, cancel_futures=True)
            seen = {r.line for r in results}
            for job, future in zip(jobs, futures):
                if job.line not in seen:
                    ran = future.done() and not future.cancelled()
                    results.append(future.result() if ran else Result(job.line, job.out, "cancelled"))
    pool.shutdown(wait=True)
    return results


def run_one(engine, job: Job, stop: threading.Event, decoder=None) -> Result:
    """One job, start to finish; any failure is this job's alone and leaves none of its files."""
    def check() -> None:  # runs before every model call of this job (cancel_scope)
        if stop.is_set():
            raise Cancelled("the run was interrupted")

    start = time.perf_counter()
    files = OutputSet(job.outs)
    try:
        with files, cancel_scope(check):  # any exception out of the block discards this job's files
            check()
            image = cli.read_image(job.image, what="image")
            if job.image == cli.SAMPLE:
                image = cli.fit_sample(image, engine.manifest.sample_size)
            else:
                cli.check_image_size(image, engine, where=f"line {job.line}: ")
            request = cli.edit_request(job.prompts, job.source_prompt, image, job.params, job.seed, job.clip_skip)
            cli.stage_images(files, job.outs, engine.run(request, decoder=decoder).images)
            check()
            files.commit()
    except Cancelled:
        return Result(job.line, job.out, "cancelled", time.perf_counter() - start)
    except Exception as err:  # noqa: BLE001 - one job's failure, whatever it is, must not stop the others
        return Result(job.line, job.out, "failed", time.perf_counter() - start, cli.message(err))
    return Result(job.line, job.out, "ok", time.perf_counter() - start)


# ---- reporting ------------------------------------------------------------------------------------------------
def _report(name: Path, result: Result) -> None:
    if result.error:
        from tqdm.auto import tqdm

        tqdm.write(f"{cli.PROG}: error: {name} line {result.line}: {result.error}", file=sys.stderr)


def summary(results: list[Result]) -> str:
    """A table: line, out, status, seconds; then the counts."""
    rows = [("line", "out", "status", "seconds")]
    rows += [(str(r.line), r.out, r.status, "-" if r.seconds is None else f"{r.seconds:.2f}") for r in results]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = ["  ".join(cell.rjust(w) if i in (0, 3) else cell.ljust(w) for i, (cell, w) in
                       enumerate(zip(row, widths))).rstrip() for row in rows]
    counts: dict[str, int] = {}
    for r in results:
        counts[r.status] = counts.get(r.status, 0) + 1
    total = math.fsum(r.seconds or 0.0 for r in results)
    lines.append(f"total: {len(results)} lines, " + ", ".join(f"{n} {s}" for s, n in counts.items()) +
                 f"; {total:.1f} s of job time")
    return "\n".join(lines)
