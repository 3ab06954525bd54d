"""cyclediff.eval: the paper's evaluation protocol (metrics, sweeps, best-of-N selection, contact sheets, plots).

    cyclediff-eval --engine exports/tiny --clip tiny --triplets triplets.csv --out runs/demo

Light to import: torch, transformers and matplotlib load only in the modules that need them.
"""
