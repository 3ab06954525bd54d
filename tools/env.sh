# Sourced by tools/*.sh: create (once) and activate the project's virtual environment, install what it needs.
# CYCLEDIFF_VENV overrides the location (default: .venv in the repository).
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${CYCLEDIFF_VENV:-$root/.venv}"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
. "$venv/bin/activate"
# Install only when pyproject.toml or the torch pin changed since the last install (the code itself is an
# editable install: edits need no reinstall). Re-installing on every run cost seconds and printed setuptools'
# notes about editable installs each time.
torch_pin="torch==${CYCLEDIFF_TORCH:-2.13.0}"
stamp="$venv/.cyclediff-installed"
want="$(cat "$root/pyproject.toml" <(echo "$torch_pin") | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  python -m pip install -q --upgrade pip
  # Pin torch first: this pin resolves to the machine's local CPU build here; an unpinned torch pulls GBs of CUDA.
  python -m pip install -q "$torch_pin"
  # -qq: setuptools' "Editable installation" note is informational; errors still print.
  # eval: cyclediff-eval and its tests; serve: cyclediff-serve (Ray Serve, FastAPI, httpx) and its tests
  python -m pip install -qq -e "$root[test,eval,serve]"
  echo "$want" > "$stamp"
fi
cd "$root"
