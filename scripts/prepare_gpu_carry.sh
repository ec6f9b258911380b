#!/usr/bin/env bash
# Prepares carry/, the git-ignored folder that travels with the working tree to
# a GPU machine without network access (docs/GPU.md):
#
#   carry/wheels/         keras and the small pure-Python (or small binary)
#                         packages it needs that a JAX + PyTorch CUDA image
#                         usually lacks, for the given CPython versions,
#                         manylinux x86_64;
#   carry/fashion-mnist/  the four Fashion-MNIST IDX .gz files.
#
#   bash scripts/prepare_gpu_carry.sh [--python-version 311[,312]] [--dest carry]
#            [--fashion-src /usr/share/datasets/fashion-mnist] [--limit-mib 64]
#
# Wheels come from PyPI (`pip download`, run with this checkout's .venv unless
# PYTHON names another interpreter); the IDX files from Debian's
# dataset-fashion-mnist package. Fails when the folder exceeds --limit-mib.
set -euo pipefail
cd "$(dirname "$0")/.."

KERAS_VERSION=3.15.1
# keras' own requirements and theirs, less numpy (every JAX or PyTorch
# install has it).
PACKAGES=(
  "keras==$KERAS_VERSION" absl-py rich namex optree h5py ml-dtypes packaging
  markdown-it-py mdurl pygments typing-extensions
)
python_versions=311
dest=carry
fashion_src=/usr/share/datasets/fashion-mnist
limit_mib=64
while [ $# -gt 0 ]; do
  case "$1" in
    --python-version) python_versions=$2; shift 2 ;;
    --dest) dest=$2; shift 2 ;;
    --fashion-src) fashion_src=$2; shift 2 ;;
    --limit-mib) limit_mib=$2; shift 2 ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
PYTHON="${PYTHON:-.venv/bin/python}"

mkdir -p "$dest/wheels" "$dest/fashion-mnist"
for version in ${python_versions//,/ }; do
  echo "=== wheels for CPython $version (manylinux x86_64)"
  # --no-deps: the list above is the closure; dependency resolution would
  # also pull numpy, which the GPU machine has.
  "$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: \
    --implementation cp --python-version "$version" \
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux_2_27_x86_64 --platform manylinux_2_28_x86_64 \
    --dest "$dest/wheels" "${PACKAGES[@]}"
done

echo "=== Fashion-MNIST from $fashion_src"
for name in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte \
            t10k-labels-idx1-ubyte; do
  if [ ! -f "$fashion_src/$name.gz" ]; then
    echo "$fashion_src/$name.gz is missing: apt-get install dataset-fashion-mnist" >&2
    exit 1
  fi
  cp "$fashion_src/$name.gz" "$dest/fashion-mnist/"
done

ls -l "$dest/wheels" "$dest/fashion-mnist"
kib=$(du -sk "$dest" | cut -f1)
echo "carry size: $(( kib / 1024 )) MiB ($kib KiB) in $dest (limit $limit_mib MiB)"
if [ "$kib" -gt $(( limit_mib * 1024 )) ]; then
  echo "$dest exceeds $limit_mib MiB: prepare fewer Python versions" >&2
  exit 1
fi
