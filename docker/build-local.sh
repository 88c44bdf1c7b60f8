#!/bin/sh
# Build the three images where no image registry is reachable (this project's CI machines): the
# base is Debian made by debootstrap from the apt mirror this machine uses, and the Python
# packages come from a wheelhouse built here (docker/wheels). Elsewhere, build with the defaults:
# see docker/Dockerfile.
set -eu
cd "$(dirname "$0")/.."
ENGINE=${ENGINE:-podman}
PYTHON=${PYTHON:-.venv/bin/python}
MIRROR=${MIRROR:-$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources)}
if ! $ENGINE image inspect localhost/localbase:bookworm >/dev/null 2>&1; then
    echo "building the base image from $MIRROR"
    root=$(mktemp -d)
    debootstrap --variant=minbase bookworm "$root" "$MIRROR" >/dev/null
    tar -C "$root" -c . | $ENGINE import - localbase:bookworm >/dev/null
    rm -rf "$root"
fi
if ! ls docker/wheels/torch-2.13.0* >/dev/null 2>&1; then
    echo "building the wheelhouse"
    $PYTHON -m pip wheel -q --wheel-dir docker/wheels torch==2.13.0 .
fi
FORMAT=""
[ "$ENGINE" != podman ] || FORMAT="--format docker"  # podman's default OCI format drops HEALTHCHECK
for target in localnet coordinator node; do
    echo "building eranos-$target"
    $ENGINE build -q $FORMAT --network host -f docker/Dockerfile --target "$target" \
        --build-arg BASE=localhost/localbase:bookworm \
        --build-arg PIP_OPTIONS="--no-index --find-links /wheels" -t "eranos-$target" . >/dev/null
done
