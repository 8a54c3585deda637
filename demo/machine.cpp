// SPDX-License-Identifier: MIT
// probe_machine(): see machine.hpp. The io_uring probes set up small rings of their own
// (liburing) and, for the multishot operations, use them once on a loopback socket: the only
// reliable test, since the opcode probe does not tell a multishot-capable kernel apart.
#include "machine.hpp"

#include "report.hpp"

#include <tandem/runtime.hpp>

#include <arpa/inet.h>
#include <liburing.h>
#include <netinet/in.h>
#include <sched.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <fstream>
#include <iterator>
#include <string>
#include <utility>

namespace demo {
namespace {

std::string first_field(const char* file, const char* key) {
    std::ifstream in(file);
    for (std::string line; std::getline(in, line);) {
        if (line.rfind(key, 0) != 0) continue;
        const std::size_t colon = line.find(':');
        if (colon == std::string::npos) continue;
        std::string v = line.substr(colon + 1);
        v.erase(0, v.find_first_not_of(" \t"));
        return v;
    }
    return {};
}

std::string compiler_name() {
#if defined(__clang__)
    return "clang++ " + std::to_string(__clang_major__) + "." + std::to_string(__clang_minor__) +
           "." + std::to_string(__clang_patchlevel__);
#elif defined(__GNUC__)
    return std::string("g++ ") + __VERSION__;
#else
    return "unknown compiler";
#endif
}

std::string build_kind() {
    std::string b;
#if defined(__OPTIMIZE__)
    b = "optimised";
#else
    b = "not optimised (numbers mean little)";
#endif
#if defined(__SANITIZE_ADDRESS__)
    b += ", AddressSanitizer (numbers mean little)";
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
    b += ", AddressSanitizer (numbers mean little)";
#endif
#endif
#if defined(__SANITIZE_THREAD__)
    b += ", ThreadSanitizer (numbers mean little)";
#endif
    return b;
}

/// Sets up a ring with `flags`; 0 or -errno.
int try_ring(io_uring& ring, unsigned flags, io_uring_params* out = nullptr) {
    io_uring_params p{};
    p.flags = flags;
    const int r = io_uring_queue_init_params(8, &ring, &p);
    if (r == 0 && out != nullptr) *out = p;
    return r;
}

/// Waits up to a second for one completion; copies it out.
bool wait_one(io_uring& ring, io_uring_cqe& out) {
    __kernel_timespec t{1, 0};
    io_uring_cqe* cqe = nullptr;
    if (io_uring_submit(&ring) < 0 || io_uring_wait_cqe_timeout(&ring, &cqe, &t) != 0) return false;
    out = *cqe;
    io_uring_cqe_seen(&ring, cqe);
    return true;
}

/// A listening loopback socket and a client connected to it: {listener, client}, -1 on failure.
std::pair<int, int> loopback_pair_start(sockaddr_in& a) {
    const int l = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    a = {};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (l < 0 || ::bind(l, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(l, 4) != 0 ||
        ::getsockname(l, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
        if (l >= 0) ::close(l);
        return {-1, -1};
    }
    return {l, ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)};
}

/// Multishot accept (Linux 5.19): one accept SQE, and its CQE says more will follow.
bool multishot_accept_works() {
    io_uring ring;
    if (try_ring(ring, 0) != 0) return false;
    sockaddr_in a{};
    auto [l, c] = loopback_pair_start(a);
    bool ok = false;
    if (l >= 0 && c >= 0) {
        io_uring_prep_multishot_accept(io_uring_get_sqe(&ring), l, nullptr, nullptr, SOCK_CLOEXEC);
        io_uring_cqe cqe{};
        if (::connect(c, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 && wait_one(ring, cqe)) {
            ok = cqe.res >= 0 && (cqe.flags & IORING_CQE_F_MORE) != 0;
            if (cqe.res >= 0) ::close(cqe.res);
        }
    }
    io_uring_queue_exit(&ring);  // cancels the accept still armed
    if (l >= 0) ::close(l);
    if (c >= 0) ::close(c);
    return ok;
}

/// Multishot receive into a provided-buffer ring (Linux 6.0).
bool multishot_recv_works() {
    io_uring ring;
    if (try_ring(ring, 0) != 0) return false;
    int sv[2] = {-1, -1};
    void* mem = nullptr;
    constexpr unsigned entries = 2, group = 7, size = 64;
    static char buffers[entries][size];
    bool ok = false;
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0 &&
        ::posix_memalign(&mem, 4096, 4096) == 0) {
        std::memset(mem, 0, 4096);
        io_uring_buf_reg reg{};
        reg.ring_addr = reinterpret_cast<std::uintptr_t>(mem);
        reg.ring_entries = entries;
        reg.bgid = group;
        if (io_uring_register_buf_ring(&ring, &reg, 0) == 0) {
            auto* br = static_cast<io_uring_buf_ring*>(mem);
            io_uring_buf_ring_init(br);
            for (unsigned i = 0; i < entries; ++i)
                io_uring_buf_ring_add(br, buffers[i], size, static_cast<unsigned short>(i),
                                      io_uring_buf_ring_mask(entries), static_cast<int>(i));
            io_uring_buf_ring_advance(br, entries);
            io_uring_sqe* sqe = io_uring_get_sqe(&ring);
            io_uring_prep_recv_multishot(sqe, sv[0], nullptr, 0, 0);
            sqe->flags |= IOSQE_BUFFER_SELECT;
            sqe->buf_group = group;
            io_uring_cqe cqe{};
            if (::write(sv[1], "x", 1) == 1 && wait_one(ring, cqe))
                ok = cqe.res == 1 && (cqe.flags & IORING_CQE_F_MORE) != 0;
        }
    }
    io_uring_queue_exit(&ring);  // before the buffer ring's memory goes
    std::free(mem);
    for (int fd : sv)
        if (fd >= 0) ::close(fd);
    return ok;
}

/// The flags tandem's own runtime set its ring up with, or why it could not start (tandem's
/// message names the likely cause and the fix).
std::string tandem_ring_flags() {
    try {
        tandem::runtime_options o;
        o.processes.enabled = false;
        tandem::runtime rt(o);
        return rt.ring_features();
    } catch (const std::exception& e) {
        return std::string("cannot start: ") + e.what();
    }
}

uring_info probe_uring() {
    uring_info u;
    {
        std::ifstream in("/proc/sys/kernel/io_uring_disabled");
        if (!(in >> u.disabled_sysctl)) u.disabled_sysctl = -1;
    }
    io_uring ring;
    io_uring_params params{};
    if (const int r = try_ring(ring, 0, &params); r != 0) {
        u.setup_error = std::string("io_uring_setup: ") + std::strerror(-r) + "; tandem runs on " +
                        tandem_ring_flags();
        return u;
    }
    u.available = true;
    static constexpr std::pair<const char*, unsigned> feats[] = {
        {"NODROP", IORING_FEAT_NODROP},
        {"SUBMIT_STABLE", IORING_FEAT_SUBMIT_STABLE},
        {"FAST_POLL", IORING_FEAT_FAST_POLL},
        {"EXT_ARG", IORING_FEAT_EXT_ARG},
        {"NATIVE_WORKERS", IORING_FEAT_NATIVE_WORKERS},
        {"CQE_SKIP", IORING_FEAT_CQE_SKIP},
        {"LINKED_FILE", IORING_FEAT_LINKED_FILE},
    };
    for (const auto& [name, bit] : feats)
        if ((params.features & bit) != 0) u.features.emplace_back(name);
    static constexpr std::pair<const char*, int> used[] = {
        {"ACCEPT", IORING_OP_ACCEPT},     {"CONNECT", IORING_OP_CONNECT},
        {"RECV", IORING_OP_RECV},         {"SEND", IORING_OP_SEND},
        {"RECVMSG", IORING_OP_RECVMSG},   {"SENDMSG", IORING_OP_SENDMSG},
        {"READ", IORING_OP_READ},         {"WRITE", IORING_OP_WRITE},
        {"OPENAT", IORING_OP_OPENAT},     {"CLOSE", IORING_OP_CLOSE},
        {"FSYNC", IORING_OP_FSYNC},       {"POLL_ADD", IORING_OP_POLL_ADD},
        {"SHUTDOWN", IORING_OP_SHUTDOWN}, {"ASYNC_CANCEL", IORING_OP_ASYNC_CANCEL},
    };
    u.ops_used = static_cast<unsigned>(std::size(used));
    io_uring_probe* probe = io_uring_get_probe_ring(&ring);
    const auto has = [&](int op) {
        return probe != nullptr && io_uring_opcode_supported(probe, op);
    };
    for (const auto& [name, op] : used)
        if (!has(op)) u.ops_missing.emplace_back(name);
    u.extras.emplace_back("MSG_RING", has(IORING_OP_MSG_RING));
    u.extras.emplace_back("SEND_ZC", has(IORING_OP_SEND_ZC));
    if (probe != nullptr) io_uring_free_probe(probe);
    io_uring_queue_exit(&ring);

    static constexpr std::pair<const char*, unsigned> setups[] = {
        {"SUBMIT_ALL", IORING_SETUP_SUBMIT_ALL},
        {"COOP_TASKRUN", IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG},
        {"SINGLE_ISSUER", IORING_SETUP_SINGLE_ISSUER},
        {"DEFER_TASKRUN", IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN},
    };
    for (const auto& [name, flags] : setups) {
        io_uring r{};
        if (try_ring(r, flags) == 0) {
            u.setup_flags.emplace_back(name);
            io_uring_queue_exit(&r);
        }
    }
    u.extras.emplace_back("multishot accept", multishot_accept_works());
    u.extras.emplace_back("multishot recv", multishot_recv_works());
    u.tandem_rings = tandem_ring_flags();
    return u;
}

}  // namespace

machine_info probe_machine() {
    machine_info m;
    if (utsname u{}; ::uname(&u) == 0)
        m.kernel = std::string(u.sysname) + " " + u.release + " " + u.machine;
    m.cpu_model = first_field("/proc/cpuinfo", "model name");
    if (m.cpu_model.empty()) m.cpu_model = first_field("/proc/cpuinfo", "Model");
    if (m.cpu_model.empty()) m.cpu_model = "unknown CPU";
    m.cores_online = static_cast<unsigned>(std::max(1L, ::sysconf(_SC_NPROCESSORS_ONLN)));
    cpu_set_t set;
    CPU_ZERO(&set);
    m.cores_usable = ::sched_getaffinity(0, sizeof set, &set) == 0
                         ? static_cast<unsigned>(CPU_COUNT(&set))
                         : m.cores_online;
    m.memory_total_mib = std::atof(first_field("/proc/meminfo", "MemTotal").c_str()) / 1024;
    m.memory_available_mib = std::atof(first_field("/proc/meminfo", "MemAvailable").c_str()) / 1024;
    m.compiler = compiler_name();
    m.build = build_kind();
    rlimit fds{};
    if (::getrlimit(RLIMIT_NOFILE, &fds) == 0) m.fd_limit = fds.rlim_cur;
    m.uring = probe_uring();
    return m;
}

std::vector<std::pair<std::string, std::string>> machine_info::lines() const {
    std::vector<std::pair<std::string, std::string>> l;
    const auto gib = [](double mib) { return format_with_unit(mib / 1024, "GiB"); };
    l.emplace_back("kernel", kernel);
    l.emplace_back("CPU", cpu_model + ", " + std::to_string(cores_online) + " cores online, " +
                              std::to_string(cores_usable) + " usable by this process");
    l.emplace_back("memory",
                   gib(memory_total_mib) + ", " + gib(memory_available_mib) + " available");
    l.emplace_back("compiler", compiler + ", " + build);
    std::string fds = group_digits(static_cast<double>(fd_limit));
    if (fd_limit_before != 0 && fd_limit_before != fd_limit)
        fds +=
            " (soft limit raised from " + group_digits(static_cast<double>(fd_limit_before)) + ")";
    l.emplace_back("fd limit", fds);
    std::string state = uring.available ? "available" : "NOT AVAILABLE: " + uring.setup_error;
    if (uring.disabled_sysctl >= 0)
        state += " (kernel.io_uring_disabled = " + std::to_string(uring.disabled_sysctl) + ")";
    l.emplace_back("io_uring", state);
    if (!uring.available) return l;
    const auto join = [](const std::vector<std::string>& v) {
        std::string s;
        for (const std::string& x : v) s += (s.empty() ? "" : " ") + x;
        return s.empty() ? std::string("none") : s;
    };
    l.emplace_back("  tandem's rings", uring.tandem_rings);
    l.emplace_back("  setup flags", join(uring.setup_flags));
    l.emplace_back("  features", join(uring.features));
    std::string ops = uring.ops_missing.empty()
                          ? "all " + std::to_string(uring.ops_used) + " that tandem uses"
                          : "MISSING " + join(uring.ops_missing);
    for (const auto& [name, ok] : uring.extras) ops += ", " + name + (ok ? " yes" : " no");
    l.emplace_back("  operations", ops);
    return l;
}

}  // namespace demo
