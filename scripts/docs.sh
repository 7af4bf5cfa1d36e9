#!/usr/bin/env bash
# `make docs`: build the HTML docs site of the collection with antsibull-docs + Sphinx into build/docs/html.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-$(scripts/find-python)}
VENV=.venv-docs
if [ ! -x "$VENV/bin/sphinx-build" ] || [ requirements-docs.txt -nt "$VENV/.installed" ]; then
  rm -rf "$VENV"
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r requirements-docs.txt
  touch "$VENV/.installed"
fi
export PATH="$PWD/$VENV/bin:$PATH"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
.venv/bin/python -c "import sys; sys.path.insert(0, 'tests'); from pathlib import Path; from support.ansible import install_collection; install_collection(Path('$work'))" 2>/dev/null \
  || "$VENV/bin/python" -c "import sys; sys.path.insert(0, 'tests'); from pathlib import Path; from support.ansible import install_collection; install_collection(Path('$work'))"
# The guides (docs/*.md) become the collection's extra docs, linked from its index.
"$VENV/bin/python" scripts/docs_guides.py "$work/ansible_collections/fleet/azure_iot"
mkdir -m 700 "$work/site"
ANSIBLE_COLLECTIONS_PATH="$work" antsibull-docs sphinx-init --use-current --dest-dir "$work/site" fleet.azure_iot >/dev/null
# Offline build: no intersphinx inventories from the internet (links to docs.ansible.com stay plain links).
printf '\n# fleet.azure_iot: build offline\nintersphinx_mapping = {}\n' >> "$work/site/conf.py"
# Offline, references into Ansible's own docs (common_return_values, ...) cannot resolve: keep them as warnings.
sed -i 's/ -W --keep-going/ --keep-going/' "$work/site/build.sh"
ANSIBLE_COLLECTIONS_PATH="$work" "$work/site/build.sh"
rm -rf build/docs
mkdir -p build/docs
cp -r "$work/site/build/html" build/docs/html
echo "docs site: build/docs/html/index.html"
