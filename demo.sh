#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# Runs tandem-demo: the one command to see what tandem does, on a fresh Debian 12 machine.
# Installs what is missing (as root: a compiler, meson, ninja, liburing, llhttp's sources),
# builds the library and the demo in build-demo/, and runs the demo with the arguments given
# (`./demo.sh --help` lists them; `./demo.sh --quick` takes under 15 s). The demo writes
# results.json and results.svg into the current directory (or --out DIR).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

for arg in "$@"; do
    if [[ $arg == -h || $arg == --help ]]; then
        echo "usage: ./demo.sh [tandem-demo options]   (builds first; the options follow)"
        echo
    fi
done

# The build's own output (apt-get, meson, ninja) goes to stderr; stdout is the demo's.
if ! "$here/test.sh" --minimal --builddir "$here/build-demo" --target demo/tandem-demo >&2; then
    echo "demo.sh: the build failed (its output is above)" >&2
    exit 2
fi
exec "$here/build-demo/demo/tandem-demo" "$@"
