#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# Proves that other projects can use tandem. Builds tandem once (no tests, benchmarks or
# examples), installs it into a temporary prefix, checks what was installed, then builds
# and runs tests/consumers/app.cpp from each consumer project:
#   meson_subproject     meson, tandem as a subproject (dependency('tandem', fallback: ...))
#   meson_pkgconfig      meson, the installed tandem found by pkg-config
#   cmake_find_package   CMake, find_package(tandem 0.1) and tandem::tandem
#   cmake_pkgconfig      CMake, pkg_check_modules(... IMPORTED_TARGET tandem)
#   plain_pkgconfig      c++ -std=c++20 app.cpp $(pkg-config --cflags --libs tandem)
# Prints one line for the installed files, "installed files: ok|FAILED", one per consumer,
# "consumer NAME: ok|FAILED", and ends with
#   N passed, N failed
# Exit status: 0 when every check passed, 1 otherwise, 2 for a usage error.
# Installs what is missing when run as root (apt-get). Works from any directory.
set -euo pipefail

usage() {
    cat <<'EOF'
usage: tests/consumers/run.sh [--keep]

  --keep      keep the temporary directory (builds, prefix, logs) and print its path
  -h, --help  show this help

Environment: CXX picks the C++ compiler (meson, CMake and the plain check all use it).
EOF
}

die() {
    echo "consumers: $*" >&2
    exit 2
}

keep=0
while [[ $# -gt 0 ]]; do
    case $1 in
        --keep) keep=1; shift ;;
        -h | --help) usage; exit 0 ;;
        *) die "unknown option '$1' (see --help)" ;;
    esac
done

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
[[ -f $repo/meson.build && -f $here/app.cpp ]] || die "cannot find the repository from $here"

# ---------------------------------------------------------------------------------------------
# Packages

# shellcheck source=../../tools/ensure_packages.sh
source "$here/../../tools/ensure_packages.sh"

ensure_packages consumers g++ meson ninja-build cmake pkg-config liburing-dev node-llhttp binutils ||
    die "cannot install what the consumers need"

# ---------------------------------------------------------------------------------------------
# Workspace

tmp=$(mktemp -d "${TMPDIR:-/tmp}/tandem-consumers.XXXXXX")
cleanup() {
    if [[ $keep -eq 1 ]]; then
        echo "consumers: kept $tmp (logs in $tmp/logs)"
    else
        rm -rf "$tmp"
    fi
}
trap cleanup EXIT

prefix=$tmp/prefix
logs=$tmp/logs
mkdir -p "$logs" "$tmp/src"

# The consumer projects refer to ../app.cpp; the subproject consumer needs tandem in its
# own subprojects/ directory. Nothing is written into the repository.
cp "$here/app.cpp" "$tmp/src/"
for name in meson_subproject meson_pkgconfig cmake_find_package cmake_pkgconfig; do
    cp -r "$here/$name" "$tmp/src/"
done
mkdir -p "$tmp/src/meson_subproject/subprojects"
ln -s "$repo" "$tmp/src/meson_subproject/subprojects/tandem"

passed=0
failed=0

# report WHAT LOG STATUS: one line, "WHAT: ok" or "WHAT: FAILED"; on failure the end of
# the log goes to stderr.
report() {
    local what=$1 log=$2 status=$3
    if [[ $status -eq 0 ]]; then
        echo "$what: ok"
        passed=$((passed + 1))
    else
        if [[ $keep -eq 1 ]]; then
            echo "$what: FAILED (log: $log)"
        else
            echo "$what: FAILED (the log's end is on stderr; --keep keeps it)"
        fi
        if [[ -f $log ]]; then
            echo "---- $what: last lines of $(basename "$log") ----" >&2
            tail -n 25 "$log" >&2
            echo "----" >&2
        fi
        failed=$((failed + 1))
    fi
}

# run_app EXE: runs a consumer's program; it must print the known line and exit 0.
run_app() {
    local out
    out=$(timeout 60 "$1" 2>&1) || {
        echo "$1 exited with $?: $out"
        return 1
    }
    echo "$out"
    [[ $out == *"tandem consumer: ok"* ]]
}

# ---------------------------------------------------------------------------------------------
# tandem: build once, install into the prefix

start=$SECONDS
installed=0
echo "consumers: building tandem and installing it into a temporary prefix"
if {
    meson setup "$tmp/tandem-build" "$repo" --prefix="$prefix" \
        -Dtests=false -Dbenchmarks=false -Dexamples=false &&
        ninja -C "$tmp/tandem-build" &&
        meson install -C "$tmp/tandem-build" --no-rebuild
} >"$logs/tandem.log" 2>&1; then
    installed=1
else
    echo "consumers: building or installing tandem failed" >&2
fi

pcfile=""
if [[ $installed -eq 1 ]]; then
    pcfile=$(find "$prefix" -name tandem.pc -path '*/pkgconfig/*' | head -n 1)
fi
libdir=${pcfile:+$(dirname "$(dirname "$pcfile")")}

# What `meson install` put in the prefix: the public headers (detail/ included), the
# library with a soname, the pkg-config file and the CMake package; nothing else (no
# programs, tests, benchmarks, examples or the internal llhttp library).
check_install() {
    [[ -n $libdir ]] || { echo "no tandem.pc under $prefix"; return 1; }
    local rel=${libdir#"$prefix"/} f bad=0 soname
    if ! diff <(cd "$repo/include" && find tandem -type f | sort) \
        <(cd "$prefix/include" && find tandem -type f | sort); then
        echo "the installed headers differ from include/tandem"
        bad=1
    fi
    while IFS= read -r f; do
        case $f in
            include/tandem/*.hpp) ;; # detail/ too: the diff above checks the exact set
            "$rel"/libtandem.so | "$rel"/libtandem.so.*) ;;
            "$rel"/pkgconfig/tandem.pc) ;;
            "$rel"/cmake/tandem/tandemConfig.cmake | "$rel"/cmake/tandem/tandemConfigVersion.cmake) ;;
            *) echo "unexpected installed file: $f"; bad=1 ;;
        esac
    done < <(cd "$prefix" && find . \( -type f -o -type l \) | sed 's|^\./||' | sort)
    for f in pkgconfig/tandem.pc cmake/tandem/tandemConfig.cmake cmake/tandem/tandemConfigVersion.cmake; do
        [[ -f $libdir/$f ]] || { echo "missing: $rel/$f"; bad=1; }
    done
    soname=$(readelf -d "$libdir/libtandem.so" 2>/dev/null | sed -n 's/.*Library soname: \[\(.*\)\].*/\1/p')
    if [[ -z $soname ]]; then
        echo "libtandem.so has no soname"
        bad=1
    else
        echo "soname: $soname"
    fi
    return "$bad"
}

if [[ $installed -eq 1 ]]; then
    status=0
    check_install >"$logs/install.log" 2>&1 || status=$?
    report "installed files" "$logs/install.log" "$status"
else
    report "installed files" "$logs/tandem.log" 1
fi

# ---------------------------------------------------------------------------------------------
# The consumers

cxx=${CXX:-c++}

# meson_subproject needs no installed tandem: it builds its own copy.
consumer_meson_subproject() {
    local b=$tmp/b-meson_subproject
    meson setup "$b" "$tmp/src/meson_subproject" --force-fallback-for=tandem &&
        ninja -C "$b" &&
        run_app "$b/app"
}

consumer_meson_pkgconfig() {
    local b=$tmp/b-meson_pkgconfig
    meson setup "$b" "$tmp/src/meson_pkgconfig" &&
        ninja -C "$b" &&
        run_app "$b/app"
}

consumer_cmake_find_package() {
    local b=$tmp/b-cmake_find_package
    cmake -S "$tmp/src/cmake_find_package" -B "$b" -G Ninja -DCMAKE_BUILD_TYPE=Release &&
        cmake --build "$b" --verbose &&
        run_app "$b/app"
}

consumer_cmake_pkgconfig() {
    local b=$tmp/b-cmake_pkgconfig
    cmake -S "$tmp/src/cmake_pkgconfig" -B "$b" -G Ninja -DCMAKE_BUILD_TYPE=Release &&
        cmake --build "$b" --verbose &&
        run_app "$b/app"
}

consumer_plain_pkgconfig() {
    local b=$tmp/b-plain_pkgconfig flags
    mkdir -p "$b"
    flags=$(pkg-config --cflags --libs tandem) || return 1
    echo "pkg-config --cflags --libs tandem: $flags"
    # shellcheck disable=SC2086 # the flags are words
    "$cxx" -std=c++20 -O2 "$tmp/src/app.cpp" -o "$b/app" $flags &&
        run_app "$b/app"
}

run_consumer() {
    local name=$1 status=0
    "consumer_$name" >"$logs/$name.log" 2>&1 || status=$?
    report "consumer $name" "$logs/$name.log" "$status"
}

run_consumer meson_subproject

if [[ $installed -eq 1 && -n $libdir ]]; then
    export PKG_CONFIG_PATH=$libdir/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}
    export CMAKE_PREFIX_PATH=$prefix${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}
    export LD_LIBRARY_PATH=$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
    for name in meson_pkgconfig cmake_find_package cmake_pkgconfig plain_pkgconfig; do
        run_consumer "$name"
    done
else
    for name in meson_pkgconfig cmake_find_package cmake_pkgconfig plain_pkgconfig; do
        echo "consumer $name: FAILED (tandem was not installed)"
        failed=$((failed + 1))
    done
fi

echo "consumers: $((SECONDS - start)) s"
echo
echo "$passed passed, $failed failed"
[[ $failed -eq 0 ]]
