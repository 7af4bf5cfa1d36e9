#!/usr/bin/env bash
# `make compat`: the oldest supported ansible-core (meta/runtime.yml requires_ansible >=2.18.0) on the oldest
# supported Python (3.11): unit, integration and packaging tests in .venv-compat. Not part of `make test`
# (which runs the newest ansible-core the machine's newest Python supports), to keep CI short.
set -euo pipefail
cd "$(dirname "$0")/.."
CORE=${CORE:-2.18}
PY=${PY:-}
if [ -z "$PY" ]; then
  for cand in python3.11 "$(pyenv root 2>/dev/null)"/versions/3.11.*/bin/python3.11 "$HOME"/.pyenv/versions/3.11.*/bin/python3.11; do
    if command -v "$cand" >/dev/null 2>&1; then PY=$(command -v "$cand"); break; fi
  done
fi
[ -n "$PY" ] || { echo "no Python 3.11 found; set PY=" >&2; exit 1; }
VENV=.venv-compat
if [ ! -x "$VENV/bin/ansible" ] || [ "$("$VENV/bin/python" -c 'import ansible; print(ansible.__version__.rsplit(".", 1)[0])')" != "$CORE" ]; then
  rm -rf "$VENV"
  "$PY" -m venv "$VENV"
  constraints=$(mktemp)
  echo "ansible-core==$CORE.*" > "$constraints"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -c "$constraints" -r requirements-dev.txt
  rm -f "$constraints"
fi
"$VENV/bin/ansible" --version | head -1
"$VENV/bin/python" -m pytest -p no:cacheprovider -q tests/unit tests/integration tests/packaging "$@"
