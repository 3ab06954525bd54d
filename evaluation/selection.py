"""Best-of-N selection per input and the summary table (mean metrics per setting, and of the selected)."""
from __future__ import annotations

import math

from cyclediff.eval.metric_names import HIGHER_IS_BETTER, METRICS

# Short names for settings in labels and tables; a method's own options not listed here keep their name.
ABBREV = {"guidance_scale": "g", "strength": "s", "eta": "eta", "source_guidance_scale": "sg",
          "cross_attention_guidance_amount": "xa", "decoder": "dec"}
HEADERS = {"clip": "CLIP", "dclip": "dCLIP", "psnr": "PSNR", "ssim": "SSIM", "l2": "L2"}


def setting_label(settings: dict[str, float | str], sep: str = " ") -> str:
    """{'guidance_scale': 2.0, 'strength': 0.8} -> 'g=2 s=0.8'; a text value (the decoder's name) as it is."""
    return sep.join(f"{ABBREV.get(k, k)}={v if isinstance(v, str) else format(v, 'g')}" for k, v in settings.items())


def rank_key(metric: str):
    """Sort key: best first for this metric; NaN (e.g. an unmeasurable score) last."""
    sign = -1 if HIGHER_IS_BETTER[metric] else 1

    def key(row: dict) -> tuple:
        value = float(row[metric])
        return (math.isnan(value), sign * value if not math.isnan(value) else 0.0)

    return key


def ranked(rows: list[dict], metric: str) -> list[dict]:
    """Rows best first (a stable sort: among equal values the earlier candidate wins)."""
    return sorted(rows, key=rank_key(metric))


def best_of_n(rows: list[dict], metric: str) -> list[dict]:
    """The best candidate of each triplet by `metric`, in the triplets' order."""
    by_triplet: dict[str, list[dict]] = {}
    for row in rows:
        by_triplet.setdefault(row["triplet"], []).append(row)
    return [ranked(group, metric)[0] for group in by_triplet.values()]


def setting_means(rows: list[dict]) -> list[dict]:
    """One row per setting (in first-seen order): n and the mean of every metric over triplets and trials."""
    groups: dict[str, list[dict]] = {}
    for row in rows:
        groups.setdefault(row["setting"], []).append(row)
    return [{"setting": name, "n": len(g), **{m: _mean(r[m] for r in g) for m in METRICS}}
            for name, g in groups.items()]


def summary_table(rows: list[dict], selected: list[dict], metric: str) -> str:
    """The terminal table: mean metrics per setting, then the best-of-N row the paper reports."""
    arrows = {m: "↑" if HIGHER_IS_BETTER[m] else "↓" for m in METRICS}
    header = ["setting", "n", *(f"{HEADERS[m]} {arrows[m]}" for m in METRICS)]
    body = [[s["setting"], str(s["n"]), *(_fmt(s[m], m) for m in METRICS)] for s in setting_means(rows)]
    n = len(rows) // max(1, len(selected))
    best = [f"best-of-{n} by {HEADERS[metric]}", str(len(selected)),
            *(_fmt(_mean(r[m] for r in selected), m) for m in METRICS)]
    widths = [max(len(line[i]) for line in [header, *body, best]) for i in range(len(header))]

    def fmt(line: list[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths)))

    rule = "-" * len(fmt(header))
    return "\n".join([fmt(header), rule, *map(fmt, body), rule, fmt(best)]) + "\n"


def _mean(values) -> float:
    vals = [float(v) for v in values]
    return sum(vals) / len(vals) if vals else float("nan")


def _fmt(value: float, metric: str) -> str:
    return {"psnr": f"{value:.2f}", "l2": f"{value:.5f}"}.get(metric, f"{value:.4f}")
