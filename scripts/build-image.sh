#!/usr/bin/env bash
# Build the llm-entry image: llm-entry:cpu or llm-entry:gpu (Dockerfile's targets).
#
# Usage: scripts/build-image.sh cpu|gpu [extra build arguments]
#
# Uses docker (when its daemon answers), podman or buildah, the first one
# present (IMAGE_TOOL=... picks one).
#
# docker builds as anyone would (`docker build --target cpu .`): the base image
# comes from a registry and pip inside the build reaches PyPI and the PyTorch
# CPU index.
#
# podman and buildah build the CPU image without any registry, as this
# project's machines must (none is reachable there), and as air-gapped sites do:
#   - the base: when mmdebstrap is present, a Debian bookworm base is built from
#     the machine's apt sources (CPU_BASE=image skips this and names one);
#   - the Python packages: wheels prepared here with this machine's pip (its
#     index settings apply), then mounted at /wheels in the build's RUN step, so
#     none stays in a layer. Needs a Python 3.11 (the base's), PYTHON=...
# Both are kept in a cache folder outside the clone (LLM_ENTRY_BUILD_CACHE,
# default ~/.cache/llm-entry-build) and reused while their inputs (the package
# lists, pyproject.toml's dependencies) are unchanged; the base image also
# stays in the image store.
set -euo pipefail
shopt -s inherit_errexit   # a failure inside $(...) fails the script too
cd "$(dirname "$0")/.."

die() { echo "build-image: $*" >&2; exit 1; }
say() { echo "build-image: $*" >&2; }

target="${1:-}"
case "$target" in
    cpu|gpu) shift ;;
    *) die "usage: scripts/build-image.sh cpu|gpu [extra build arguments]" ;;
esac

tool="${IMAGE_TOOL:-}"
if [ -z "$tool" ]; then
    if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then tool=docker; fi
    for candidate in podman buildah; do
        if [ -z "$tool" ] && command -v "$candidate" >/dev/null 2>&1; then tool="$candidate"; fi
    done
fi
[ -n "$tool" ] || die "none of docker, podman or buildah is installed: install one (apt-get install podman buildah)"
command -v "$tool" >/dev/null 2>&1 || die "IMAGE_TOOL=$tool is not installed"

tag="llm-entry:$target"
cache="${LLM_ENTRY_BUILD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/llm-entry-build}"

# What the local base holds: the Dockerfile's cpu stage installs the same list
# with apt when its base lacks any of them.
BASE_SUITE=bookworm
BASE_PACKAGES="python3,python3-venv,redis-server,libnuma1,libgomp1,ca-certificates"

short_hash() { sha256sum | cut -c1-12; }

image_exists() {
    case "$tool" in
        docker) docker image inspect "$1" >/dev/null 2>&1 ;;
        *) "$tool" inspect --type image "$1" >/dev/null 2>&1 ;;
    esac
}

# The Debian base as an image, from the cache when its inputs are unchanged.
local_base() {
    local key name tarball
    key="$(printf '%s %s' "$BASE_SUITE" "$BASE_PACKAGES" | short_hash)"
    name="localhost/llm-entry-base:$BASE_SUITE-$key"
    if image_exists "$name"; then echo "$name"; return; fi
    tarball="$cache/base-$BASE_SUITE-$key.tar"
    if [ ! -s "$tarball" ]; then
        command -v mmdebstrap >/dev/null 2>&1 || die "no base image $name and no mmdebstrap to build it: install mmdebstrap, or pass CPU_BASE=an-image"
        say "building the Debian $BASE_SUITE base with mmdebstrap (about a minute)"
        mkdir -p "$cache"
        find "$cache" -maxdepth 1 -name 'base-*.tar*' -exec rm -f {} +   # keep one base
        mmdebstrap --quiet --format=tar --variant=minbase --include="$BASE_PACKAGES" \
            --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
            --dpkgopt='path-exclude=/usr/share/locale/*' \
            --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin' \
            "$BASE_SUITE" "$tarball.part" >&2
        mv "$tarball.part" "$tarball"
    fi
    say "importing $tarball as $name"
    case "$tool" in
        buildah)
            local ctr
            ctr="$(buildah from scratch)"
            buildah add "$ctr" "$tarball" / >/dev/null
            buildah commit --quiet "$ctr" "$name" >/dev/null
            buildah rm "$ctr" >/dev/null ;;
        *) "$tool" import "$tarball" "$name" >/dev/null ;;
    esac
    echo "$name"
}

# The wheels of everything the cpu target installs, from the cache when
# pyproject.toml's dependencies are unchanged.
local_wheels() {
    local py="${PYTHON:-python3}" version reqs key dir
    version="$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')" \
        || die "no Python '$py' to prepare the wheels with: pass PYTHON=python3.11"
    [ "$version" = 3.11 ] || die "the wheels must match the base's Python 3.11, and $py is $version: pass PYTHON=python3.11"
    reqs="$("$py" - <<'PY'
import tomllib
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
# The build backend too: the build installs llm-entry itself from source.
build = tomllib.load(open("pyproject.toml", "rb"))["build-system"]["requires"]
# What markers ask for on the base's Python (bookworm's 3.11.2) that this
# Python may not: redis wants async-timeout below 3.11.3.
markers = ["async-timeout>=4.0.3"]
print("\n".join(sorted(project["dependencies"] + project["optional-dependencies"]["cpu"] + build + ["wheel"] + markers)))
PY
)"
    key="$(printf '%s\n%s\n' "$version" "$reqs" | short_hash)"
    dir="$cache/wheels-$key"
    if [ ! -f "$dir/.complete" ]; then
        say "preparing wheels in $dir (a few minutes the first time)"
        # Wheels for other dependencies are a gigabyte each: keep one set.
        find "$cache" -maxdepth 1 -name 'wheels-*' -exec rm -rf {} +
        mkdir -p "$dir"
        printf '%s\n' "$reqs" > "$dir/requirements.txt"
        "$py" -m pip wheel --quiet --wheel-dir "$dir" -r "$dir/requirements.txt" >&2
        touch "$dir/.complete"
    fi
    echo "$dir"
}

args=(--target "$target" -t "$tag" -f Dockerfile)
case "$tool" in
    docker)
        exec docker build "${args[@]}" "$@" . ;;
    podman|buildah)
        # chroot isolation: builds where the OCI runtime cannot start containers
        # (no rlimits may be set on this project's machines); BUILD_ISOLATION=oci
        # where it can.
        args+=(--isolation "${BUILD_ISOLATION:-chroot}")
        if [ "$target" = cpu ]; then
            base="${CPU_BASE:-}"
            if [ -z "$base" ]; then base="$(local_base)"; fi
            wheels="$(local_wheels)"
            args+=(--build-arg "CPU_BASE=$base" --volume "$wheels:/wheels:ro")
        fi
        if [ "$tool" = podman ]; then exec podman build "${args[@]}" "$@" .
        else exec buildah bud "${args[@]}" "$@" .
        fi ;;
    *) die "unknown IMAGE_TOOL $tool: docker, podman or buildah" ;;
esac
