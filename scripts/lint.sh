#!/usr/bin/env bash
# ansible-lint (production profile) on the roles and example playbooks, as installed in a collections path,
# and antsibull-changelog lint on the changelog fragments.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
export PATH="$PWD/$BIN:$PATH"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$BIN/python" -c "import sys; sys.path.insert(0, 'tests'); from pathlib import Path; from support.ansible import install_collection; install_collection(Path('$tmp'))"
ANSIBLE_COLLECTIONS_PATH="$tmp:$PWD/.venv/collections" ANSIBLE_HOME="$tmp/home" "$BIN/ansible-lint" --offline --profile production roles playbooks
"$BIN/antsibull-changelog" lint
(cd "$tmp/ansible_collections/fleet/azure_iot" && cp -r "$OLDPWD/changelogs" "$OLDPWD/docs" . \
  && ANSIBLE_COLLECTIONS_PATH="$tmp" "$OLDPWD/$BIN/antsibull-docs" lint-collection-docs --plugin-docs --validate-collection-refs self .)
echo "lint: ok"
