"""check_export: the export's own checks, run by the command before Ray starts (a replica would repeat them later).

A damaged export (a truncated or deleted file, a broken manifest.json) otherwise surfaces only after Ray has
started and Serve has retried the replica's constructor three times (~25 s), inside a Ray traceback."""
from __future__ import annotations

from pathlib import Path

from cyclediff.export.manifest import MANIFEST, Manifest, ManifestError

VERIFY = "fast"  # sizes + sampled-block stamps, as Engine.load's default (export/integrity.py)


def check_export(folder: str | Path, backend: str = "auto", flag: str = "--engine") -> Manifest:
    """ManifestError (one line, naming the problem and the fix) unless the export can be served.

    As Core.open starts: the manifest and its tokenizer files; then every file the manifest records (models,
    fp16 graphs, optimized graphs, IR) in the fast mode. The torch backend reads the checkpoint instead of the
    exported graphs, so only its replica checks what it reads."""
    folder = Path(folder)
    if not (folder / MANIFEST).is_file():
        raise ManifestError(f"{flag} {folder}: no {MANIFEST} there; pass a folder made by cyclediff-export "
                          "(e.g. cyclediff-export --ckpt tiny --out exports/tiny)")
    try:
        manifest = Manifest.load(folder, verify_files=False)
        manifest.verify_files(folder, models=())  # the tokenizer files, as Core.open checks them
        if backend != "torch":
            _check_files(folder, manifest)
    except ManifestError as err:  # its message already says how to fix it
        raise ManifestError(f"{flag} {folder}: {_one_line(err)}") from None
    except (ValueError, TypeError, AttributeError, KeyError, OSError) as err:  # a manifest of the wrong shape; I/O
        raise ManifestError(f"{flag} {folder}: the export could not be read ({type(err).__name__}: "
                          f"{_one_line(err)}); re-run `cyclediff-export` into {folder}") from None
    return manifest


def check_decoder(engine: Manifest, folder: str | Path, backend: str = "auto") -> Manifest:
    """check_export for --decoder-engine, plus: its latent space is the engine's (else ManifestError saying why)."""
    from cyclediff.runtime.core.latent_space import LatentSpace

    decoder = check_export(folder, backend, "--decoder-engine")
    why = LatentSpace.of(engine).incompatibilities(LatentSpace.of(decoder))
    if why:
        raise ManifestError(f"--decoder-engine {folder} cannot decode --engine's codes: {'; '.join(why)} (pass a "
                            "fine-tune of the same base model)")
    return decoder


def _check_files(folder: Path, manifest: Manifest) -> None:
    from cyclediff.export import integrity  # imports torch: only once the command line is known to be good

    for group in integrity.groups(manifest):
        integrity.check(folder, manifest, group, VERIFY)


def _one_line(err: Exception) -> str:
    return " ".join(str(err).split())
