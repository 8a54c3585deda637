#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# Builds the libFuzzer targets in fuzz/ with clang (ASan + UBSan) in build-fuzz and runs each
# for SECONDS, starting from a copy of its seed corpus in fuzz/corpus/ (the repository is not
# written). Prints one line per target and a summary; exits non-zero if any target failed.
#
#   fuzz/run.sh SECONDS [TARGET...]     e.g. fuzz/run.sh 60 http_response
#
# Installs clang, libclang-rt-dev and the build's packages with apt-get when they are missing
# (as root). A failure leaves its work directory (the crash input and the log) in place and
# prints the command that reproduces it. BUILD_DIR overrides build-fuzz.

set -u

usage() {
    sed -n '4,12p' "$0" | sed 's/^# \{0,1\}//'
}

if [[ $# -lt 1 || $1 == -h || $1 == --help ]]; then
    usage
    [[ $# -ge 1 ]] && exit 0
    exit 2
fi
seconds=$1
shift
if ! [[ $seconds =~ ^[0-9]+$ ]] || [[ $seconds -eq 0 ]]; then
    echo "run.sh: SECONDS must be a positive whole number, not '$seconds'" >&2
    exit 2
fi

cd "$(dirname "$0")/.." || exit 2
root=$PWD
builddir=${BUILD_DIR:-build-fuzz}
all_targets=(address_parse codec_decode http_response)
targets=("$@")
[[ ${#targets[@]} -eq 0 ]] && targets=("${all_targets[@]}")
for t in "${targets[@]}"; do
    if [[ ! -f fuzz/$t.cpp ]]; then
        echo "run.sh: no fuzz target '$t' (have: ${all_targets[*]})" >&2
        exit 2
    fi
done

# ---- packages ---------------------------------------------------------------------------------

# shellcheck source=tools/ensure_packages.sh
source tools/ensure_packages.sh  # the working directory is the repository (above)

if command -v dpkg-query >/dev/null; then
    ensure_packages fuzz clang libclang-rt-dev meson ninja-build pkg-config liburing-dev node-llhttp ||
        exit 2
fi

# ---- build ------------------------------------------------------------------------------------

# The library and llhttp get libFuzzer's coverage too (fuzzer-no-link); UBSan stops at the first
# error, so it counts as a crash. UBSan's `function` check is off: with coverage, clang 14 fails
# to assemble some of the library's functions ("Cannot represent a difference across sections").
if [[ ! -f $builddir/build.ninja ]]; then
    instrument='-fsanitize=fuzzer-no-link -fno-sanitize-recover=all -fno-sanitize=function'
    if ! CC=clang CXX=clang++ meson setup "$builddir" \
        -Dfuzz=true -Dtests=false -Dbenchmarks=false -Dexamples=false \
        -Dbuildtype=debugoptimized -Db_sanitize=address,undefined -Db_lundef=false \
        "-Dcpp_args=$instrument" "-Dc_args=$instrument" >"$builddir.setup.log" 2>&1; then
        cat "$builddir.setup.log" >&2
        echo "run.sh: meson setup $builddir failed" >&2
        exit 2
    fi
    rm -f "$builddir.setup.log"
fi
exes=()
for t in "${targets[@]}"; do exes+=("fuzz/fuzz_$t"); done
if ! ninja -C "$builddir" "${exes[@]}" >/dev/null; then
    ninja -C "$builddir" "${exes[@]}" >&2
    echo "run.sh: building the fuzz targets failed" >&2
    exit 2
fi

# ---- run --------------------------------------------------------------------------------------

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:symbolize=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:abort_on_error=1:print_stacktrace=1}
passed=0
failed=0
for t in "${targets[@]}"; do
    work=$(mktemp -d "${TMPDIR:-/tmp}/tandem-fuzz-$t.XXXXXX")
    mkdir -p "$work/corpus"
    [[ -d fuzz/corpus/$t ]] && cp -r "fuzz/corpus/$t/." "$work/corpus/"
    flags=(-max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=512
        -print_final_stats=1 -artifact_prefix="$work/")
    [[ -f fuzz/$t.dict ]] && flags+=(-dict="$root/fuzz/$t.dict")
    [[ $t == http_response && -f fuzz/http.dict ]] && flags+=(-dict="$root/fuzz/http.dict")
    exe=$root/$builddir/fuzz/fuzz_$t
    "$exe" "${flags[@]}" "$work/corpus" >"$work/log" 2>&1
    rc=$?
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/log" | tail -n 1)
    crash=$(find "$work" -maxdepth 1 -type f \( -name 'crash-*' -o -name 'leak-*' \
        -o -name 'timeout-*' -o -name 'oom-*' \) | head -n 1)
    if [[ $rc -eq 0 && -z $crash ]]; then
        echo "fuzz $t: ok (${runs:-0} runs)"
        passed=$((passed + 1))
        rm -rf "$work"
    else
        echo "fuzz $t: FAILED (exit $rc after ${runs:-?} runs; log: $work/log)"
        if [[ -n $crash ]]; then
            echo "  crash input: $crash"
            echo "  reproduce:   $exe $crash"
        fi
        grep -m 5 -E 'ERROR|runtime error|SUMMARY|^[a-z_]+: ' "$work/log" | sed 's/^/  /'
        failed=$((failed + 1))
    fi
done
echo "$passed passed, $failed failed"
[[ $failed -eq 0 ]]
