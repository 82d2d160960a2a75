# Sourced by scripts/serve and scripts/test: a virtual environment in .venv with the pinned dependencies.
# Re-installs only when pyproject.toml or constraints.txt changed since the last install.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3}"
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "synapgate: Python 3.11 or newer is needed (set PYTHON=/path/to/python3.11)" >&2
  exit 1
fi
if [ ! -x .venv/bin/python ]; then
  # No pip in the venv (ensurepip alone takes ~8 s on our 2-core machine): uv installs into it.
  "$PYTHON" -m venv --without-pip .venv
fi
stamp=".venv/.synapgate-installed"
want="$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  # uv (fetched by the system's pip into .venv/.uv) installs the pinned set in seconds where pip takes ~70 s;
  # pip remains the fallback.
  uv_dir=".venv/.uv"
  if { [ -x "$uv_dir/bin/uv" ] || "$PYTHON" -m pip install --quiet --disable-pip-version-check \
      --target "$uv_dir" "uv==0.13.9" 2>/dev/null; } \
    && "$uv_dir/bin/uv" pip install --quiet --python .venv/bin/python -c constraints.txt -e ".[dev]"; then
    :
  else
    echo "synapgate: uv unavailable, installing with pip" >&2
    .venv/bin/python -m ensurepip --upgrade >/dev/null
    .venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[dev]"
  fi
  echo "$want" > "$stamp"
fi
export PATH="$ROOT/.venv/bin:$PATH"
# tiktoken cannot download its encodings without internet: use the shipped ones where they are.
if [ -z "${TIKTOKEN_CACHE_DIR:-}" ] && [ -d "$ROOT/../shared/tiktoken" ]; then
  export TIKTOKEN_CACHE_DIR="$(cd "$ROOT/../shared/tiktoken" && pwd)"
fi
