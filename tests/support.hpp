// SPDX-License-Identifier: MIT
#pragma once

// Helpers shared by the test binaries; tests/main.cpp is linked into each of them.

#include <cstdio>
#include <cstdlib>

/// Reports the whole test binary as skipped and exits with meson's skip code (77).
///
/// Call it when a kernel feature the binary needs is missing (io_uring disabled, an opcode
/// the kernel does not know, ...), typically at the start of a test case, before anything
/// has been asserted. Prints `TANDEM_RESULT passed=0 failed=0 skipped=1` on stdout, which
/// test.sh adds up, and the reason on stdout and stderr. Any result of a test case that ran
/// earlier in the same binary is discarded. Safe to call from the main thread only: it runs
/// std::exit, so static destructors (among them the watchdog's) run.
[[noreturn]] inline void tandem_test_skip_all(const char* why) {
    const char* reason = why != nullptr ? why : "no reason given";
    std::fflush(stdout);
    std::printf("\nskipped: %s\nTANDEM_RESULT passed=0 failed=0 skipped=1\n", reason);
    std::fflush(stdout);
    std::fprintf(stderr, "skipped: %s\n", reason);
    std::exit(77);
}
