#!/usr/bin/env bash
# One command: export the built-in `tiny` checkpoint and edit the bundled sample image with it.
set -euo pipefail
. "$(dirname "$0")/env.sh"
cyclediff-export --ckpt tiny --out exports/tiny
cyclediff-run --engine exports/tiny --image sample --source-prompt "a house on a green hill" \
  --prompt "a castle on a snowy hill" --steps 50 --seed 0 --out out/castle.png --grid
cyclediff-run --engine exports/tiny --method pix2pix-zero --image sample --caption "a house on a green hill" \
  --source-word house --target-word castle --steps 50 --seed 0 --out out/castle_p2pz.png --grid
echo "wrote out/castle.png and out/castle_grid.png (CycleDiffusion), out/castle_p2pz.png and its grid (Pix2Pix-Zero)"
