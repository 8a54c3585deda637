#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# Builds tandem and runs its tests: the one command to run on a fresh Debian 12 machine.
# Installs what is missing (as root), configures with meson, builds with ninja, runs
# `meson test`, and ends with one line adding up the test cases of every test binary:
#   N passed, N failed[, N skipped]
# Run `./test.sh --help` for the options.
set -euo pipefail

usage() {
    cat <<'EOF'
usage: ./test.sh [options] [-- extra meson test arguments]

  --builddir DIR        build directory (default: build, or build-<variant> for the
                        variants below, e.g. build-asan, build-tsan, build-clang)
  --sanitize LIST       address,undefined  (-Db_sanitize=address,undefined -Db_lundef=false)
                        thread             (-Db_sanitize=thread)
                        (also address, undefined, leak)
  --compiler NAME       gcc (default) or clang
  --buildtype TYPE      meson buildtype (default: release; debugoptimized with --sanitize)
  --suite NAME          run only this meson test suite (may be repeated); the soak
                        suite (about a minute) runs only when named: --suite soak
  --label WORD          tag the closing line: "[WORD] N passed / N failed" instead of the
                        plain "N passed, N failed" (used by .ci/run for its sub-runs)
  --block-io-uring      run every test with io_uring blocked by a seccomp filter (EPERM, as
                        in Docker): the runtime falls back to its epoll backend
  --build-only          configure and build, run no test
  --target NAME         build only this ninja target (may be repeated), e.g. demo/tandem-demo
  --minimal             only what the library, the examples and the demo need: installs no
                        test or benchmark packages and configures with -Dtests=false
                        -Dbenchmarks=false (implies --build-only; ./demo.sh uses it)
  --format-check        only check formatting with clang-format --dry-run --Werror over
                        include/ lib/ tests/ bench/ examples/ demo/, then exit
  -h, --help            show this help

The counts are also written to DIR/tandem-summary.txt as "passed failed skipped".
Exit status: 0 when everything built and no test failed, 1 otherwise.
Environment: TANDEM_TEST_WATCHDOG_SECONDS sets the per-test-case watchdog (default 60 s,
120 s in sanitizer builds); ASAN_OPTIONS, UBSAN_OPTIONS, TSAN_OPTIONS are respected if set.
EOF
}

die() {
    echo "test.sh: $*" >&2
    exit 2
}

builddir=""
sanitize=""
compiler="gcc"
buildtype=""
label=""
format_check=0
build_only=0
block_io_uring=0
minimal=0
targets=()
suites=()
extra_args=()

need_value() {
    [[ $# -ge 2 && -n $2 ]] || die "$1 needs a value (see --help)"
}

while [[ $# -gt 0 ]]; do
    case $1 in
        --builddir) need_value "$@"; builddir=$2; shift 2 ;;
        --builddir=*) builddir=${1#*=}; shift ;;
        --sanitize) need_value "$@"; sanitize=$2; shift 2 ;;
        --sanitize=*) sanitize=${1#*=}; shift ;;
        --compiler) need_value "$@"; compiler=$2; shift 2 ;;
        --compiler=*) compiler=${1#*=}; shift ;;
        --buildtype) need_value "$@"; buildtype=$2; shift 2 ;;
        --buildtype=*) buildtype=${1#*=}; shift ;;
        --suite) need_value "$@"; suites+=("$2"); shift 2 ;;
        --suite=*) suites+=("${1#*=}"); shift ;;
        --label) need_value "$@"; label=$2; shift 2 ;;
        --label=*) label=${1#*=}; shift ;;
        --build-only) build_only=1; shift ;;
        --block-io-uring) block_io_uring=1; shift ;;
        --target) need_value "$@"; targets+=("$2"); shift 2 ;;
        --target=*) targets+=("${1#*=}"); shift ;;
        --minimal) minimal=1; build_only=1; shift ;;
        --format-check) format_check=1; shift ;;
        -h | --help) usage; exit 0 ;;
        --) shift; extra_args=("$@"); break ;;
        *) die "unknown option '$1' (see --help)" ;;
    esac
done

# A --builddir given by the user is relative to where they ran the script; the rest is
# relative to the repository.
if [[ -n $builddir && $builddir != /* ]]; then
    builddir=$PWD/$builddir
fi
cd "$(dirname "${BASH_SOURCE[0]}")"

case $compiler in
    gcc | g++) compiler=gcc; cc=gcc; cxx=g++ ;;
    clang | clang++) compiler=clang; cc=clang; cxx=clang++ ;;
    *) die "--compiler must be gcc or clang, not '$compiler'" ;;
esac

variant=""
case $sanitize in
    "" | none) sanitize=none ;;
    address,undefined | undefined,address) sanitize=address,undefined; variant=asan ;;
    address) variant=asan ;;
    undefined) variant=ubsan ;;
    thread) variant=tsan ;;
    leak) variant=lsan ;;
    *) die "--sanitize must be address,undefined or thread, not '$sanitize'" ;;
esac
if [[ $compiler == clang ]]; then
    variant=clang${variant:+-$variant}
fi
if [[ -z $builddir ]]; then
    builddir=build${variant:+-$variant}
fi
if [[ -z $buildtype ]]; then
    if [[ $sanitize == none ]]; then buildtype=release; else buildtype=debugoptimized; fi
fi

# ---------------------------------------------------------------------------------------------
# Packages

# shellcheck source=tools/ensure_packages.sh
source tools/ensure_packages.sh  # the working directory is the repository (above)

# ---------------------------------------------------------------------------------------------
# Format check

if [[ $format_check -eq 1 ]]; then
    ensure_packages test.sh clang-format || exit 1
    dirs=()
    for d in include lib tests bench examples demo; do
        [[ -d $d ]] && dirs+=("$d")
    done
    files=()
    if [[ ${#dirs[@]} -gt 0 ]]; then
        mapfile -t files < <(find "${dirs[@]}" -type f \( -name '*.cpp' -o -name '*.hpp' \) | sort)
    fi
    if [[ ${#files[@]} -eq 0 ]]; then
        echo "format check: no files to check"
        exit 0
    fi
    if clang-format --dry-run --Werror "${files[@]}"; then
        echo "format check: ${#files[@]} files formatted correctly"
        exit 0
    fi
    echo "format check: FAILED; fix with: clang-format -i \$(git ls-files '*.cpp' '*.hpp')"
    exit 1
fi

# ---------------------------------------------------------------------------------------------
# Results

# Prints the closing line, writes DIR/tandem-summary.txt, exits 0 or 1.
finish() {
    local passed=$1 failed=$2 skipped=$3 line
    mkdir -p "$builddir"
    echo "$passed $failed $skipped" >"$builddir/tandem-summary.txt"
    if [[ -n $label ]]; then
        line="[$label] $passed passed / $failed failed"
        [[ $skipped -gt 0 ]] && line+=" / $skipped skipped"
    else
        line="$passed passed, $failed failed"
        [[ $skipped -gt 0 ]] && line+=", $skipped skipped"
    fi
    echo
    echo "$line"
    if [[ $failed -eq 0 ]]; then exit 0; fi
    exit 1
}

build_failed() {
    echo "test.sh: $1 failed in $builddir" >&2
    finish 0 1 0
}

packages=(g++ meson ninja-build pkg-config liburing-dev node-llhttp)
if [[ $minimal -eq 0 ]]; then
    packages+=(catch2 libbenchmark-dev libasio-dev python3 nginx-light wrk)
fi
if [[ $compiler == clang ]]; then
    packages+=(clang libclang-rt-dev)
fi
ensure_packages test.sh "${packages[@]}" || build_failed "installing packages"

# ---------------------------------------------------------------------------------------------
# Configure and build

export CC=$cc CXX=$cxx
lundef=true
[[ $sanitize != none ]] && lundef=false
meson_options=(-Dbuildtype="$buildtype" -Db_sanitize="$sanitize" -Db_lundef="$lundef")
if [[ $minimal -eq 1 ]]; then
    meson_options+=(-Dtests=false -Dbenchmarks=false)
else
    meson_options+=(-Dtests=true -Dbenchmarks=true)
fi
# What `meson configure` cannot change (the compiler) forces a wipe when it differs.
config_stamp="compiler=$compiler CC=$cc CXX=$cxx"
stamp_file=$builddir/tandem-config.txt

echo "test.sh: $builddir: $compiler, buildtype=$buildtype, sanitize=$sanitize"
if [[ -f $builddir/meson-private/coredata.dat ]]; then
    if [[ -f $stamp_file && $(<"$stamp_file") == "$config_stamp" ]]; then
        meson configure "$builddir" "${meson_options[@]}" || build_failed "meson configure"
    else
        meson setup --wipe "$builddir" "${meson_options[@]}" || build_failed "meson setup --wipe"
    fi
else
    meson setup "$builddir" "${meson_options[@]}" || build_failed "meson setup"
fi
echo "$config_stamp" >"$stamp_file"

ninja -C "$builddir" ${targets[@]+"${targets[@]}"} || build_failed "the build"
if [[ $build_only -eq 1 ]]; then
    echo "test.sh: built in $builddir"
    exit 0
fi

# ---------------------------------------------------------------------------------------------
# Test

if [[ $sanitize != none ]]; then
    : "${TANDEM_TEST_WATCHDOG_SECONDS:=120}"
    export TANDEM_TEST_WATCHDOG_SECONDS
fi
# Without halt_on_error UBSan only prints, and the test would pass.
: "${UBSAN_OPTIONS:=halt_on_error=1:print_stacktrace=1}"
: "${ASAN_OPTIONS:=detect_leaks=1:check_initialization_order=1:strict_init_order=1}"
: "${TSAN_OPTIONS:=halt_on_error=1:second_deadlock_stack=1}"
export UBSAN_OPTIONS ASAN_OPTIONS TSAN_OPTIONS

test_args=(-C "$builddir" --print-errorlogs --num-processes 2)
[[ $sanitize != none ]] && test_args+=(--timeout-multiplier 3)
for s in ${suites[@]+"${suites[@]}"}; do
    test_args+=(--suite "$s")
done
# The soak (about a minute of load and faults) runs only when named: --suite soak.
[[ ${#suites[@]} -eq 0 ]] && test_args+=(--no-suite soak)
if [[ $block_io_uring -eq 1 ]]; then
    wrapper=$(realpath "$builddir/tests/no_io_uring")
    [[ -x $wrapper ]] || die "--block-io-uring needs $builddir/tests/no_io_uring (a test build)"
    test_args+=(--wrapper "$wrapper")
fi

testlog=$builddir/meson-logs/testlog.json
# meson names the log after the wrapper.
[[ $block_io_uring -eq 1 ]] && testlog=$builddir/meson-logs/testlog-no_io_uring.json
rm -f "$testlog"
test_rc=0
meson test "${test_args[@]}" ${extra_args[@]+"${extra_args[@]}"} || test_rc=$?

# Adds up the TANDEM_RESULT lines that tests/main.cpp prints; a test binary that failed
# without one (crash, meson timeout, not a Catch2 test) counts as one failed test.
counts=$(python3 - "$testlog" <<'EOF'
import json, os, re, sys

path = sys.argv[1]
pattern = re.compile(r"TANDEM_RESULT passed=(\d+) failed=(\d+) skipped=(\d+)")
passed = failed = skipped = 0
problems = []
lines = open(path, encoding="utf-8", errors="replace") if os.path.exists(path) else []
for raw in lines:
    raw = raw.strip()
    if not raw:
        continue
    try:
        test = json.loads(raw)
    except ValueError:
        failed += 1
        problems.append(("testlog.json", "unreadable line"))
        continue
    name = test.get("name", "?")
    result = test.get("result", "?")
    match = None
    for match in pattern.finditer(test.get("stdout") or ""):
        pass
    if result == "EXPECTEDFAIL":
        passed += 1
        continue
    if result == "UNEXPECTEDPASS":
        failed += 1
        problems.append((name, result))
        continue
    p, f, s = map(int, match.groups()) if match else (0, 0, 0)
    passed, failed, skipped = passed + p, failed + f, skipped + s
    if result == "OK":
        if not match:
            passed += 1
        elif f:
            problems.append((name, "OK but reported %d failed" % f))
    elif result == "SKIP":
        if not match:
            skipped += 1
    else:
        if not match or f == 0:
            failed += 1
        problems.append((name, result))
for name, what in problems:
    print("test.sh: failed: %s (%s)" % (name, what), file=sys.stderr)
print(passed, failed, skipped)
EOF
) || counts="0 1 0"
read -r passed failed skipped <<<"$counts"

if [[ $test_rc -ne 0 && $failed -eq 0 ]]; then
    echo "test.sh: meson test exited with $test_rc" >&2
    failed=1
fi
if [[ $sanitize == thread && -f $testlog ]] && grep -q "unexpected memory mapping" "$testlog"; then
    echo "test.sh: TSan cannot map its shadow memory with this kernel's ASLR;" \
        "try: sysctl -w vm.mmap_rnd_bits=28" >&2
fi
finish "$passed" "$failed" "$skipped"
