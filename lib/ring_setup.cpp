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

namespace {

/// "io_uring_enter failed with EPERM (Operation not permitted)".
std::string call_failed(const char* call, int err) {
    return std::string(call) + " failed with " + errno_name(err) + " (" + std::strerror(err) + ")";
}

// Every opcode the loop, the sockets, the files and the pool's manager use.
constexpr struct {
    int op;
    const char* name;
} needed_ops[] = {
    {IORING_OP_NOP, "NOP"},           {IORING_OP_READ, "READ"},
    {IORING_OP_WRITE, "WRITE"},       {IORING_OP_FSYNC, "FSYNC"},
    {IORING_OP_POLL_ADD, "POLL_ADD"}, {IORING_OP_ASYNC_CANCEL, "ASYNC_CANCEL"},
    {IORING_OP_ACCEPT, "ACCEPT"},     {IORING_OP_CONNECT, "CONNECT"},
    {IORING_OP_OPENAT, "OPENAT"},     {IORING_OP_CLOSE, "CLOSE"},
    {IORING_OP_SEND, "SEND"},         {IORING_OP_RECV, "RECV"},
    {IORING_OP_SENDMSG, "SENDMSG"},   {IORING_OP_RECVMSG, "RECVMSG"},
    {IORING_OP_SHUTDOWN, "SHUTDOWN"},
};

std::string probe_ring(io_uring* ring) {
    // A NOP: seccomp may allow io_uring_setup and refuse io_uring_enter.
    io_uring_sqe* sqe = io_uring_get_sqe(ring);
    io_uring_prep_nop(sqe);
    io_uring_sqe_set_data64(sqe, 1);
    int r = io_uring_submit_and_wait(ring, 1);
    if (r < 0) return call_failed("io_uring_enter", -r);
    io_uring_cqe* cqe = nullptr;
    r = io_uring_peek_cqe(ring, &cqe);
    if (r < 0 || cqe->res != 0) return "io_uring did not complete a NOP";
    io_uring_cqe_seen(ring, cqe);

    io_uring_probe* probe = io_uring_get_probe_ring(ring);
    if (probe == nullptr) return "io_uring_register (PROBE) failed";
    std::string missing;
    for (const auto& o : needed_ops) {
        if (!io_uring_opcode_supported(probe, o.op)) missing += std::string(" ") + o.name;
    }
    io_uring_free_probe(probe);
    if (!missing.empty()) return "this kernel's io_uring lacks" + missing;

    // Closing a socket cancels its operations through this registration (Linux 6.0).
    io_uring_sync_cancel_reg reg{};
    reg.fd = ring->ring_fd;
    reg.flags = IORING_ASYNC_CANCEL_FD | IORING_ASYNC_CANCEL_ALL;
    reg.timeout.tv_sec = -1;
    reg.timeout.tv_nsec = -1;
    r = io_uring_register_sync_cancel(ring, &reg);
    if (r < 0 && r != -ENOENT) return call_failed("io_uring_register (SYNC_CANCEL)", -r);
    return {};
}

}  // namespace

std::string io_uring_unavailable() {
    io_uring ring{};
    io_uring_params p{};
    const int r = io_uring_queue_init_params(8, &ring, &p);
    if (r < 0) {
        const int err = -r;
        if (err == EMFILE || err == ENFILE || err == ENOMEM) return {};
        std::string why = setup_error_message(err);
        const std::string prefix = "tandem: ";
        return why.starts_with(prefix) ? why.substr(prefix.size()) : why;
    }
    std::string why;
    const unsigned needed = IORING_FEAT_NODROP | IORING_FEAT_EXT_ARG;
    if ((p.features & needed) != needed) {
        why = "this kernel's io_uring lacks IORING_FEAT_NODROP or IORING_FEAT_EXT_ARG";
    } else {
        why = probe_ring(&ring);
    }
    io_uring_queue_exit(&ring);
    return why;
}

}  // namespace tandem::detail
