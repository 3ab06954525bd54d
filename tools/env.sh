# Sourced by tools/*.sh: create (once) and activate the project's virtual environment, install what it needs.
# CYCLEDIFF_VENV overrides the location (default: .venv in the repository).
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${CYCLEDIFF_VENV:-$root/.venv}"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
. "$venv/bin/activate"
python -m pip install -q --upgrade pip
# Pin torch first: this pin resolves to the machine's local CPU build here; an unpinned torch pulls GBs of CUDA.
python -m pip install -q "torch==${CYCLEDIFF_TORCH:-2.13.0}"
python -m pip install -q -e "$root[test]"
cd "$root"
