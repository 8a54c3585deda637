// SPDX-License-Identifier: MIT
//
// no_io_uring PROGRAM [ARGS...]: runs PROGRAM with the io_uring system calls
// failing with EPERM (a seccomp filter, as in Docker's default profile), and
// TANDEM_IO_URING_BLOCKED=1 in its environment so that tests can check the
// runtime really fell back to epoll. `./test.sh --block-io-uring` runs the
// whole suite through it (meson test --wrapper).

#include "block_io_uring.hpp"

#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

int main(int argc, char** argv) {
    if (argc < 2) {
        std::fprintf(stderr, "usage: no_io_uring PROGRAM [ARGS...]\n");
        return 2;
    }
    if (!tandem_test::block_io_uring(EPERM)) {
        std::fprintf(stderr, "no_io_uring: cannot install the seccomp filter: %s\n",
                     std::strerror(errno));
        return 2;
    }
    ::setenv("TANDEM_IO_URING_BLOCKED", "1", 1);
    ::execvp(argv[1], argv + 1);
    std::fprintf(stderr, "no_io_uring: cannot run %s: %s\n", argv[1], std::strerror(errno));
    return 127;
}
