"""A finished sweep's outputs: candidates.csv, selected.csv, summary.txt (also printed), contact sheets, plots."""
from __future__ import annotations

import PIL.Image

from cyclediff.eval.plots import tradeoff_png
from cyclediff.eval.selection import HEADERS, ranked
from cyclediff.export.atomic_files import atomic_write_bytes
from cyclediff.runtime.grid import contact_sheet


def columns(sweep) -> list[str]:
    """CSV columns: ids, the common settings, the method's options, trial, seed, steps, metrics, image."""
    from cyclediff.eval.sweep import ID_COLUMNS, SETTING_COLUMNS, TAIL_COLUMNS

    decoder = ("decoder",) if sweep.cfg.grid.decoders else ()
    return [*ID_COLUMNS, *SETTING_COLUMNS, *decoder, *sweep.method.options, *TAIL_COLUMNS]


def write_report(sweep, rows: list[dict], selected: list[dict], table: str) -> None:
    store, cfg = sweep.store, sweep.cfg
    cols = columns(sweep)
    store.write_csv("candidates.csv", rows, cols)
    store.write_csv("selected.csv", selected, cols)
    store.write_text("summary.txt", table)
    for t in sweep.triplets:
        store.write_png(store.root / "sheets" / f"{t.id}.png", _sheet(sweep, t))
    for fidelity in ("psnr", "ssim"):
        atomic_write_bytes(store.root / "plots" / f"tradeoff_{fidelity}.png",
                           tradeoff_png(rows, selected, fidelity, cfg.select))
    print(table, end="")
    if not cfg.quiet:
        print(f"wrote {store.root}/candidates.csv, selected.csv, summary.txt, sheets/, plots/")


def _sheet(sweep, t) -> PIL.Image.Image:
    """Input, then the sheet_size best candidates of t by the selection metric (their images are kept)."""
    best = ranked(sweep.triplet_rows(t), sweep.cfg.select)[: sweep.cfg.sheet_size]
    tiles = [(sweep.inputs[t.id], ["input", f"line {t.line}: {t.id}"])]
    for rank, row in enumerate(best):
        with PIL.Image.open(sweep.store.root / row["image"]) as img:
            name = f"best by {HEADERS[sweep.cfg.select]}" if rank == 0 else f"#{rank + 1}"
            tiles.append((img.convert("RGB"), candidate_label(name, row, row["setting"])))
    return contact_sheet([img for img, _ in tiles], [lines for _, lines in tiles],
                         title=f"{t.source_prompt} -> {t.target_prompt}")


def candidate_label(rank: str, row: dict, setting: str) -> list[str]:
    """The lines under a candidate: its rank, setting and trial, and its metrics."""
    return [rank, f"{setting} t={row['trial']}", f"dCLIP {float(row['dclip']):.3f} CLIP {float(row['clip']):.1f}",
            f"PSNR {float(row['psnr']):.1f} SSIM {float(row['ssim']):.3f}"]
