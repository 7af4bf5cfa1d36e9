#!/usr/bin/env bash
# ansible-test sanity and units, with the local Python (no container engine here).
# ansible-test needs a real .../ansible_collections/fleet/azure_iot path, and it bootstraps pip in each of its
# venvs from https://ci-files.testing.ansible.com, which these machines cannot reach: a local stand-in of that
# script (ensurepip in a subprocess, then pip from PyPI) is put in its cache first (../shared/reference/style.md B.3).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
REPO=$PWD
export PATH="$REPO/$BIN:$PATH"
PYVER=$("$BIN/python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
PIPVER=$("$BIN/python" - <<'PY'
import re, pathlib, ansible_test
src = (pathlib.Path(ansible_test.__file__).parent / "_internal" / "python_requirements.py").read_text()
print(re.search(r"pip='([0-9.]+)'", src).group(1))
PY
)
cache="$HOME/.ansible/test/cache"
mkdir -p "$cache"
standin="$cache/get_pip_${PIPVER//./_}.py"
if [ ! -f "$standin" ] || ! grep -q "fleet.azure_iot stand-in" "$standin"; then
  cat > "$standin" <<'PY'
# fleet.azure_iot stand-in for ansible-test's get-pip download (unreachable from these machines):
# bootstrap pip with ensurepip in a subprocess, then install the requested packages from the index.
import subprocess
import sys

subprocess.check_call([sys.executable, "-m", "ensurepip", "--upgrade", "--default-pip"])
args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
subprocess.check_call([sys.executable, "-m", "pip", "install", *args])
PY
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
dest="$work/ansible_collections/fleet/azure_iot"
mkdir -p "$dest"
# The collection's own content (what the Galaxy artifact carries) and its unit tests.
for item in galaxy.yml README.md meta plugins roles playbooks changelogs docs requirements.txt tests/unit tests/config.yml .gitignore; do
  [ -e "$item" ] || continue
  mkdir -p "$dest/$(dirname "$item")"
  cp -r "$item" "$dest/$item"
done
find "$dest" -name __pycache__ -prune -exec rm -rf {} +
cd "$dest"
ansible-test sanity --venv --python "$PYVER" --color no "$@"
ansible-test units --venv --python "$PYVER" --color no
echo "sanity and units: ok"
