#!/usr/bin/env bash
# Release check: builds the sdist and the wheel (the wheel from the sdist),
# checks their metadata with twine, then installs the wheel, not editable,
# with its runtime requirements into a new virtual environment of its own
# and runs examples/quickstart_digits.py on JAX from a directory outside the
# source tree, so only the installed wheel can be imported. Everything goes
# to a temporary directory. VENV=path names the environment that has `build`
# and `twine` (the dev extra; default .venv).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

"$VENV/bin/python" -m build --outdir "$work/dist" . >"$work/build.log" 2>&1 \
  || { cat "$work/build.log"; exit 1; }
"$VENV/bin/python" -m twine check --strict "$work"/dist/*
wheel=$(ls "$work"/dist/*.whl)
version=$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' keras_agrlearn/version.py)
case "$(basename "$wheel")" in
  "keras_agrlearn-$version-"*) ;;
  *) echo "wheel $(basename "$wheel") does not carry version $version"; exit 1 ;;
esac

# No --system-site-packages and no -e: the wheel and what it declares.
python3 -m venv "$work/venv"
"$work/venv/bin/python" -m pip install -q -c constraints-cpu.txt "$wheel[jax]" scikit-learn
mkdir "$work/run"
cp examples/quickstart_digits.py "$work/run/"
cd "$work/run"
export KERAS_BACKEND=jax
unset PYTHONPATH
"$work/venv/bin/python" - "$work/venv" "$version" <<'EOF'
import pathlib
import sys

import keras_agrlearn

location = pathlib.Path(keras_agrlearn.__file__).resolve()
assert location.is_relative_to(pathlib.Path(sys.argv[1]).resolve()), location
assert keras_agrlearn.__version__ == sys.argv[2], keras_agrlearn.__version__
print(f"keras_agrlearn {keras_agrlearn.__version__} from {location.parent}")
EOF
"$work/venv/bin/python" quickstart_digits.py | tee "$work/quickstart.log"
grep -q "^wrap(backbone) " "$work/quickstart.log"
echo "release check: passed"
