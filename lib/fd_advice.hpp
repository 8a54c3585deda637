// SPDX-License-Identifier: MIT
#pragma once

// The advice a system error carries when its errno says file descriptors ran out, so that a
// runtime that cannot start under a low RLIMIT_NOFILE says why (whichever of its eventfds,
// memfd, pipes or sockets hit the limit first).

#include <cerrno>
#include <string>

namespace tandem::detail {

/// " (...)" for EMFILE and ENFILE; empty for every other errno.
inline std::string fd_advice(int err) {
    if (err == EMFILE)
        return " (this process is out of file descriptors: raise the open-file limit, "
               "ulimit -n or RLIMIT_NOFILE, or close some)";
    if (err == ENFILE) return " (the system is out of file descriptors: see fs.file-max)";
    return {};
}

}  // namespace tandem::detail
