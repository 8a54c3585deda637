# SPDX-License-Identifier: MIT
#
# ensure_packages NAME PKG...: installs the Debian packages that are missing (apt-get update
# first), as root; otherwise says what to install. NAME prefixes the messages. Returns non-zero
# when something is missing and cannot be installed. Sourced by test.sh, fuzz/run.sh and
# tests/consumers/run.sh.

ensure_packages() {
    local who=$1 missing=() pkg status
    shift
    for pkg in "$@"; do
        status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
        [[ $status == "install ok installed" ]] || missing+=("$pkg")
    done
    [[ ${#missing[@]} -eq 0 ]] && return 0
    if ! command -v apt-get >/dev/null; then
        echo "$who: missing packages (${missing[*]}) and no apt-get to install them" >&2
        return 1
    fi
    if [[ $EUID -ne 0 ]]; then
        echo "$who: missing packages; run as root, or: sudo apt-get install ${missing[*]}" >&2
        return 1
    fi
    echo "$who: installing ${missing[*]}"
    apt-get update || return 1
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
}
