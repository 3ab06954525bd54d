"""The sweep: every triplet x every grid setting, encode once per encoding setting, decode the rest from it,
measure, keep going across restarts, then write the tables, contact sheets and plots."""
from __future__ import annotations

import dataclasses
import hashlib
import sys
from pathlib import Path

import PIL.Image
import torch
from tqdm.auto import tqdm

from cyclediff.eval import metrics
from cyclediff.eval.grid import GridError, SweepGrid, check_metric
from cyclediff.eval.methods import get_method
from cyclediff.eval.selection import best_of_n, ranked, setting_label, summary_table
from cyclediff.eval.store import RunStore
from cyclediff.eval.triplets import Triplet, TripletError, load_triplets, read_image
from cyclediff.runtime.core.checks import check_number

KEEP_IMAGES = ("sheet", "all")
SETTING_COLUMNS = ("guidance_scale", "strength", "eta")  # then the method's options
ID_COLUMNS = ("triplet", "line", "candidate", "setting", "method")
TAIL_COLUMNS = ("trial", "seed", "steps", *metrics.METRICS, "image")


@dataclasses.dataclass(frozen=True)
class SweepConfig:
    """Everything one sweep needs. size: the evaluation side in px (None: the checkpoint's native size)."""

    engine: Path
    triplets: Path
    out: Path
    grid: SweepGrid = dataclasses.field(default_factory=SweepGrid)
    clip: str = "openai/clip-vit-base-patch32"
    select: str = "dclip"
    sheet_size: int = 4
    keep_images: str = "sheet"
    backend: str = "auto"
    dtype: str = "fp32"
    device: str = "cpu"
    size: int | None = None
    max_batch: int = 16
    quiet: bool = False
    # The decoder axis: export folders that decode each code, named in grid.decoders by decoder_names().
    decoder_engines: tuple[Path, ...] = ()
    image_root: Path | None = None  # where the triplets' relative image paths start (None: triplets.py's rule)

    def __post_init__(self):
        check_metric(self.select)
        if self.keep_images not in KEEP_IMAGES:
            raise ValueError(f"--keep-images must be one of {', '.join(KEEP_IMAGES)}, got {self.keep_images!r}")
        check_number("--sheet-size", self.sheet_size, integer=True, low=1)
        if self.grid.decoders != decoder_names(self.decoder_engines):
            raise ValueError("grid.decoders must be decoder_names(decoder_engines)")


def decoder_names(folders) -> tuple[str, ...]:
    """The decoder axis' values: each export folder's own name, which must be unique."""
    names = tuple(Path(f).resolve().name for f in folders)
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise GridError(f"--decoder-engine: several exports named {', '.join(twice)}; the axis names each by its "
                        "folder, so give them folders of different names")
    return names


@dataclasses.dataclass
class SweepResult:
    rows: list[dict]
    selected: list[dict]
    table: str
    resumed_candidates: int  # candidates found finished at the start (0 for a fresh run)


def run_sweep(cfg: SweepConfig) -> SweepResult:
    """Check everything cheap first (run folder, grid, method options, triplets, images), then load and run."""
    from cyclediff.export.manifest import Manifest
    from cyclediff.export.writable import check_writable

    check_writable(cfg.out, "--out")  # a read-only --out: one line now, not a raw errno at the first write
    method = get_method(cfg.grid.method, cfg.grid.options)
    triplets = load_triplets(cfg.triplets, cfg.image_root)
    manifest = Manifest.load(cfg.engine, verify_files=False)
    size = cfg.size or manifest.sample_size
    inputs = _read_inputs(triplets, size)
    from cyclediff.eval.clip_model import ClipEmbedder, resolve_clip

    clip_dir = resolve_clip(cfg.clip)
    store = RunStore(cfg.out)
    decoders = _decoder_manifests(cfg, manifest)
    store.open(_identity(cfg, manifest.digest, triplets, clip_dir, size)
               | ({"decoders": {n: m.digest for n, m in decoders.items()}} if decoders else {}))
    sweep = _Sweep(cfg, method, triplets, inputs, store)
    done = sweep.load_done()
    if done and not cfg.quiet:
        print(f"cyclediff-eval: resuming {cfg.out}: {done} of {sweep.total} candidates already done", file=sys.stderr)
    if done < sweep.total:
        import cyclediff

        def load(folder: Path):
            return cyclediff.Engine.load(folder, backend=cfg.backend, device=cfg.device, progress=False,
                                         max_batch=cfg.max_batch, dtype=cfg.dtype)

        engine = load(cfg.engine)
        same = Path(cfg.engine).resolve()
        engines = {n: engine if Path(f).resolve() == same else load(f)
                   for n, f in zip(cfg.grid.decoders, cfg.decoder_engines)}
        sweep.run(engine, ClipEmbedder(clip_dir, cfg.device), done, engines)
    return sweep.finish(done)


def _decoder_manifests(cfg: SweepConfig, manifest) -> dict:
    """Each --decoder-engine's manifest by name, once its latent space is checked to be the engine's."""
    from cyclediff.export.manifest import Manifest
    from cyclediff.runtime.core.latent_space import LatentSpace

    out = {}
    for name, folder in zip(cfg.grid.decoders, cfg.decoder_engines):
        other = Manifest.load(folder, verify_files=False)
        why = LatentSpace.of(manifest).incompatibilities(LatentSpace.of(other))
        if why:
            raise GridError(f"--decoder-engine {folder} cannot decode --engine's codes: {'; '.join(why)}")
        out[name] = other
    return out


def _read_inputs(triplets: list[Triplet], size: int) -> dict[str, PIL.Image.Image]:
    images, errors = {}, []
    for t in triplets:
        try:
            images[t.id] = read_image(t, size)
        except TripletError as err:
            errors.append(str(err))
    if errors:
        raise TripletError("bad triplet images (fix these lines):\n  " + "\n  ".join(errors))
    return images


def _identity(cfg: SweepConfig, engine_digest: str, triplets: list[Triplet], clip_dir: Path, size: int) -> dict:
    """What the results depend on: a restart must match it exactly (content hashes, not paths, for inputs)."""
    files = [{"id": t.id, "image_sha256": _sha256(t.image), "source": t.source_prompt, "target": t.target_prompt}
             for t in triplets]
    return {"engine": engine_digest, "backend": cfg.backend, "device": cfg.device, "size": size,
            "clip": _sha256(clip_dir / "config.json") + ":" + str(clip_dir.resolve()),
            "grid": dataclasses.asdict(cfg.grid), "select": cfg.select, "sheet_size": cfg.sheet_size,
            "keep_images": cfg.keep_images, "triplets": files,
            **({"dtype": cfg.dtype} if cfg.dtype != "fp32" else {})}  # fp32 runs from before --dtype still resume


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def to_tensor(image: PIL.Image.Image) -> torch.Tensor:
    """PIL RGB -> (1, 3, H, W) float on [0, 1]."""
    data = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)
    return data.view(image.height, image.width, 3).permute(2, 0, 1)[None].float() / 255


def to_pil(image: torch.Tensor) -> PIL.Image.Image:
    """(3, H, W) on [0, 1] -> PIL RGB (rounded to 8 bits, as a saved PNG)."""
    array = (image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).contiguous().numpy()
    return PIL.Image.fromarray(array)


class _Sweep:
    """One sweep's state: finished rows per (triplet, encoding), the method, the store."""

    def __init__(self, cfg: SweepConfig, method, triplets: list[Triplet], inputs: dict, store: RunStore):
        self.cfg, self.method, self.triplets, self.inputs, self.store = cfg, method, triplets, inputs, store
        self.encodings = method.encodings(cfg.grid)
        self.decodings = method.decodings(cfg.grid)
        self.total = len(triplets) * cfg.grid.size()
        self.parts: dict[tuple[str, str], list[dict]] = {}

    def units(self):
        """(triplet, encoding settings, encoding key) in the canonical order of the result tables."""
        for t in self.triplets:
            for enc in self.encodings:
                yield t, enc, setting_label(enc, "_").replace("=", "")

    def load_done(self) -> int:
        for t, _, key in self.units():
            rows = self.store.read_part(t.id, key)
            if rows is not None:
                self.parts[(t.id, key)] = rows
        return sum(len(rows) for rows in self.parts.values())

    def run(self, engine, clip, done: int, decoders: dict | None = None) -> None:
        bar = tqdm(total=self.total, initial=done, unit="cand", desc="cyclediff-eval", disable=self.cfg.quiet,
                   dynamic_ncols=True)
        texts: dict[str, torch.Tensor] = {}
        with bar:
            for t, enc, key in self.units():
                if (t.id, key) in self.parts:
                    continue
                if t.id not in texts:  # (3, D): the input image, source text, target text
                    texts[t.id] = torch.cat([clip.embed_images(to_tensor(self.inputs[t.id])),
                                             clip.embed_texts([t.source_prompt, t.target_prompt])])
                rows = self._unit(engine, clip, t, enc, key, texts[t.id], decoders)
                self._keep_images(t, rows)
                rows = [{k: v for k, v in r.items() if k != "_image"} for r in rows]  # the pixels are saved
                self.store.write_part(t.id, key, rows)
                self.parts[(t.id, key)] = rows
                self._prune(t)
                bar.update(len(rows))

    def _unit(self, engine, clip, t: Triplet, enc: dict, key: str, emb: torch.Tensor, decoders=None) -> list[dict]:
        """Run one encoding's candidates and measure them. Rows in (decoding, trial) order."""
        grid = self.cfg.grid
        out = self.method.run(engine, self.inputs[t.id], t.source_prompt, t.target_prompt, enc, self.decodings,
                              grid, decoders)
        images = (out.flatten(0, 1).clamp(0, 1) * 255).round() / 255  # (D*T, 3, H, W): 8-bit, as saved
        scores = metrics.pixel_metrics(images, to_tensor(self.inputs[t.id]))
        out_emb = clip.embed_images(images)
        scores["clip"] = metrics.clip_score(out_emb, emb[2:3])
        scores["dclip"] = metrics.directional_clip(out_emb, emb[0:1], emb[2:3], emb[1:2])
        rows, i = [], 0
        for dec in self.decodings:
            for trial, seed in enumerate(grid.seeds):
                rows.append(self._row(t, {**dec, **enc}, trial, seed, {m: float(scores[m][i]) for m in scores},
                                      images[i]))
                i += 1
        return rows

    def _row(self, t: Triplet, settings: dict, trial: int, seed: int, scores: dict, image: torch.Tensor) -> dict:
        label = setting_label(settings)
        candidate = f"{setting_label(settings, '_').replace('=', '')}_t{trial}"
        return {"triplet": t.id, "line": t.line, "candidate": candidate, "setting": label,
                "method": self.cfg.grid.method, **settings, "trial": trial, "seed": seed, "steps": self.cfg.grid.steps,
                **{m: scores[m] for m in metrics.METRICS}, "image": "", "_image": image}

    def triplet_rows(self, t: Triplet) -> list[dict]:
        """t's finished rows, in the canonical order."""
        return [r for u, _, key in self.units() if u.id == t.id for r in self.parts.get((t.id, key), [])]

    def _shown(self, t: Triplet) -> set[str]:
        """Candidates that the contact sheet of t shows (the best sheet_size so far)."""
        return _top(self.triplet_rows(t), self.cfg)

    def _keep_images(self, t: Triplet, rows: list[dict]) -> None:
        """Write the images to keep, before the part that lists them (a crash leaves at most unlisted files)."""
        keep = None if self.cfg.keep_images == "all" else _top(self.triplet_rows(t) + rows, self.cfg)
        for r in rows:
            if keep is None or r["candidate"] in keep:
                path = self.store.image_path(t.id, r["candidate"])
                self.store.write_png(path, to_pil(r["_image"]))
                r["image"] = str(path.relative_to(self.store.root))

    def _prune(self, t: Triplet) -> None:
        """keep_images='sheet': drop the images of candidates that left the top (they never come back)."""
        if self.cfg.keep_images == "all":
            return
        shown = self._shown(t)
        for r in self.triplet_rows(t):
            if r["image"] and r["candidate"] not in shown:
                self.store.image_path(t.id, r["candidate"]).unlink(missing_ok=True)
                r["image"] = ""

    def finish(self, done: int) -> SweepResult:
        from cyclediff.eval.report import write_report

        for t in self.triplets:
            self._prune(t)
        rows = [r for t in self.triplets for r in self.triplet_rows(t)]
        selected = best_of_n(rows, self.cfg.select)
        table = summary_table(rows, selected, self.cfg.select)
        write_report(self, rows, selected, table)
        return SweepResult(rows, selected, table, done)


def _top(rows: list[dict], cfg: SweepConfig) -> set[str]:
    return {r["candidate"] for r in ranked(rows, cfg.select)[: cfg.sheet_size]}
