#!/usr/bin/env bash
# Installs the docs extra into the environment (VENV=path, default .venv) and
# builds the documentation site with `mkdocs build --strict` into a temporary
# directory: a broken link, a page missing from the nav or a docstring the API
# reference cannot render fails the build. `mkdocs serve` shows the site while
# writing.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
"$VENV/bin/python" -m pip install -q -c constraints-cpu.txt -e ".[docs]"
site=$(mktemp -d)
trap 'rm -rf "$site"' EXIT
NO_MKDOCS_2_WARNING=1 "$VENV/bin/python" -m mkdocs build --strict --site-dir "$site"
echo "docs check: passed ($(find "$site" -name index.html | wc -l) pages)"
