#!/usr/bin/env bash
# Downloads, on a machine with internet, the wheels benchmarks/device/check.py installs on the GPU
# machine (no internet there): requirements.txt's pins for CPython 3.12 on manylinux x86_64, into
# benchmarks/device/wheels/ (git-ignored; pass it to the device run with carry). torch is not
# downloaded: the GPU machine has its own CUDA build.
#
#   benchmarks/device/wheels.sh [DEST]      # PYTHON_VERSION=3.12 by default
#
# psfmodels publishes no cp312 wheel, so its sdist is built here with a CPython of that version
# (python3.12 on PATH, a pyenv 3.12, or $PYTHON_BUILD) and a C++ compiler; that wheel is tagged
# linux_x86_64 and needs a glibc at least as new as the symbols it was built against (README).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
dest="${1:-$here/wheels}"
version="${PYTHON_VERSION:-3.12}"
pip=("${PIP_PYTHON:-$here/../../.venv/bin/python}" -m pip)
mkdir -p "$dest"

grep -v -e '^#' -e '^psfmodels' -e '^$' "$here/requirements.txt" > "$dest/binary-requirements.txt"
"${pip[@]}" download --quiet --no-deps --only-binary=:all: --implementation cp --python-version "$version" \
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
    -r "$dest/binary-requirements.txt" -d "$dest"
rm "$dest/binary-requirements.txt"

build="${PYTHON_BUILD:-}"
if [ -z "$build" ]; then
    if command -v "python$version" >/dev/null && "python$version" -V >/dev/null 2>&1; then
        build="python$version"
    elif command -v pyenv >/dev/null && pyenv versions --bare | grep -q "^$version"; then
        build="$(pyenv root)/versions/$(pyenv versions --bare | grep "^$version" | tail -1)/bin/python"
    else
        echo "error: no Python $version to build psfmodels with; set PYTHON_BUILD" >&2
        exit 1
    fi
fi
psfmodels="$(grep '^psfmodels==' "$here/requirements.txt")"
"$build" -m pip wheel --quiet --no-deps --no-binary psfmodels "$psfmodels" -w "$dest"
ls "$dest"/*.whl | wc -l | xargs echo "wheels in $dest:"
du -sh "$dest"
