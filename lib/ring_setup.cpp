// SPDX-License-Identifier: MIT
#include "ring_setup.hpp"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <system_error>

namespace tandem::detail {

namespace {

struct flag_set {
    unsigned flags;
    const char* name;
};

// Most capable first. DEFER_TASKRUN runs completion work only when this
// thread enters the kernel to wait, which suits one ring per thread;
// TASKRUN_FLAG lets liburing see pending work without a syscall.
constexpr flag_set candidates[] = {
    {IORING_SETUP_SUBMIT_ALL | IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG |
         IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN,
     "SINGLE_ISSUER|DEFER_TASKRUN|COOP_TASKRUN|TASKRUN_FLAG|SUBMIT_ALL"},
    {IORING_SETUP_SUBMIT_ALL | IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG |
         IORING_SETUP_SINGLE_ISSUER,
     "SINGLE_ISSUER|COOP_TASKRUN|TASKRUN_FLAG|SUBMIT_ALL"},
    {IORING_SETUP_SUBMIT_ALL | IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG,
     "COOP_TASKRUN|TASKRUN_FLAG|SUBMIT_ALL"},
    {0, "no setup flags"},
};

const char* errno_name(int err) {
    switch (err) {
        case EPERM:
            return "EPERM";
        case EACCES:
            return "EACCES";
        case ENOSYS:
            return "ENOSYS";
        case ENOMEM:
            return "ENOMEM";
        case EMFILE:
            return "EMFILE";
        case ENFILE:
            return "ENFILE";
        case EINVAL:
            return "EINVAL";
        default:
            return "an error";
    }
}

}  // namespace

std::string setup_error_message(int err) {
    std::string msg = "tandem: io_uring_setup failed with ";
    msg += errno_name(err);
    msg += " (";
    msg += std::strerror(err);
    msg += "): ";
    switch (err) {
        case EPERM:
        case EACCES:
            msg +=
                "io_uring is blocked, most likely by a seccomp filter (Docker's and "
                "containerd's default profiles block io_uring_setup) or by the sysctl "
                "kernel.io_uring_disabled (2 disables it for everyone, 1 for processes "
                "outside kernel.io_uring_group). Fix: run the container with a seccomp "
                "profile that allows io_uring_setup, io_uring_enter and io_uring_register "
                "(e.g. --security-opt seccomp=unconfined), or set "
                "sysctl kernel.io_uring_disabled=0";
            break;
        case ENOSYS:
            msg +=
                "this kernel has no io_uring (too old, or built without CONFIG_IO_URING), "
                "or a seccomp filter returns ENOSYS for it. Fix: run on Linux 6.1 or newer "
                "with CONFIG_IO_URING=y, or allow the io_uring syscalls in the seccomp profile";
            break;
        case ENOMEM:
            msg +=
                "the kernel could not allocate the ring, usually because RLIMIT_MEMLOCK "
                "(ulimit -l) is too small on kernels before 5.12. Fix: raise the memlock "
                "limit or lower runtime_options::ring_entries";
            break;
        case EMFILE:
        case ENFILE:
            msg +=
                "no file descriptor is left for the ring. Fix: raise the open-file limit "
                "(ulimit -n) or close descriptors";
            break;
        case EINVAL:
            msg +=
                "the kernel rejected every set of setup flags tandem tries, or "
                "runtime_options::ring_entries is out of range (1 to 32768). Fix: use a "
                "power of two ring size and Linux 6.1 or newer";
            break;
        default:
            msg += "unexpected error from io_uring_setup";
            break;
    }
    return msg;
}

ring_setup_result setup_ring(io_uring* ring, unsigned entries) {
    int last = EINVAL;
    for (const flag_set& c : candidates) {
        io_uring_params p{};
        p.flags = c.flags | IORING_SETUP_CQSIZE;
        // A CQ four times the SQ: bursts of completions rarely overflow, and
        // overflow loses nothing anyway (IORING_FEAT_NODROP, checked below).
        p.cq_entries = entries * 4;
        int r = io_uring_queue_init_params(entries, ring, &p);
        if (r == 0) {
            const unsigned needed = IORING_FEAT_NODROP | IORING_FEAT_EXT_ARG;
            if ((p.features & needed) != needed) {
                io_uring_queue_exit(ring);
                throw std::system_error(
                    ENOSYS, std::system_category(),
                    "tandem: this kernel's io_uring lacks IORING_FEAT_NODROP or "
                    "IORING_FEAT_EXT_ARG (Linux 5.11+). Fix: run on Linux 6.1 or newer");
            }
            return {c.flags, p.features, c.name};
        }
        last = -r;
        if (last != EINVAL) break;  // only unknown flags are worth another try
    }
    throw std::system_error(last, std::system_category(), setup_error_message(last));
}

}  // namespace tandem::detail
