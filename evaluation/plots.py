"""Trade-off plots: CLIP score against PSNR and against SSIM, one point per setting (mean over inputs and
trials), every candidate faint behind, and the best-of-N selection marked. matplotlib's Agg backend, PNG."""
from __future__ import annotations

import io
import math

from cyclediff.eval.selection import HEADERS, setting_means

MARKERS = "os^Dv<>p"


def tradeoff_png(rows: list[dict], selected: list[dict], fidelity: str, select_metric: str) -> bytes:
    """PNG bytes of CLIP score (y) against `fidelity` ('psnr' or 'ssim') (x)."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed; set before pyplot is imported
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.8), dpi=100)
    try:
        _draw(ax, rows, selected, fidelity, select_metric)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", bbox_inches="tight")
        return buf.getvalue()
    finally:
        plt.close(fig)


def _draw(ax, rows: list[dict], selected: list[dict], fidelity: str, select_metric: str) -> None:
    import matplotlib

    finite = [r for r in rows if _finite(r[fidelity])]  # PSNR is inf for an unchanged image
    ax.scatter([float(r[fidelity]) for r in finite], [float(r["clip"]) for r in finite], s=8, c="0.8",
               label="candidates")
    colors = matplotlib.colormaps["tab20"]
    for i, s in enumerate(setting_means(finite)):  # one colour and marker per setting, named in the legend
        ax.scatter(s[fidelity], s["clip"], s=40, color=colors(i % 20), marker=MARKERS[i // 20 % len(MARKERS)],
                   edgecolors="black", linewidths=0.5, label=s["setting"])
    chosen = [r for r in selected if _finite(r[fidelity])]
    ax.scatter([float(r[fidelity]) for r in chosen], [float(r["clip"]) for r in chosen], marker="*", s=90,
               c="crimson", label=f"best-of-N by {HEADERS[select_metric]}")
    ax.set_xlabel(f"{HEADERS[fidelity]} vs input (higher: closer to the input)")
    ax.set_ylabel("CLIP score vs target text")
    ax.set_title(f"CLIP score / {HEADERS[fidelity]} trade-off per setting (mean over inputs and trials)", fontsize=9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    ax.grid(alpha=0.3)


def _finite(value) -> bool:
    return math.isfinite(float(value))
