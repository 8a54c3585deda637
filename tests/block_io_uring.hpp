// SPDX-License-Identifier: MIT
#pragma once

// A seccomp filter that makes the io_uring system calls fail with an errno, as
// Docker's default profile does (EPERM). Used by tests/no_io_uring.cpp (the
// whole suite a second time, on the epoll backend) and by runtime_test.

#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/prctl.h>
#include <sys/syscall.h>

#include <cstddef>

namespace tandem_test {

/// Which calls fail: all three (setup, enter, register, as Docker), only
/// io_uring_setup, or only io_uring_enter (a ring can be made, not used).
enum class uring_calls { all, setup, enter };

/// Installs the filter on the calling thread (inherited by threads it starts
/// later, by fork and by exec). Sets no_new_privs, which unprivileged
/// processes need for seccomp. False if the kernel refused, or not x86-64.
inline bool block_io_uring(int err, uring_calls which = uring_calls::all) {
#if defined(__x86_64__)
    const unsigned ret = SECCOMP_RET_ERRNO | (static_cast<unsigned>(err) & SECCOMP_RET_DATA);
    // Three slots; a call named twice just matches twice.
    unsigned calls[3] = {__NR_io_uring_setup, __NR_io_uring_enter, __NR_io_uring_register};
    if (which == uring_calls::setup) calls[1] = calls[2] = __NR_io_uring_setup;
    if (which == uring_calls::enter) calls[0] = calls[2] = __NR_io_uring_enter;
    sock_filter filter[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, arch)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),  // another ABI: leave it alone
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, calls[0], 3, 0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, calls[1], 2, 0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, calls[2], 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        BPF_STMT(BPF_RET | BPF_K, ret),
    };
    sock_fprog prog{};
    prog.len = static_cast<unsigned short>(sizeof filter / sizeof filter[0]);
    prog.filter = filter;
    if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return false;
    return ::prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) == 0;
#else
    (void)err, (void)which;
    return false;
#endif
}

}  // namespace tandem_test
