// SPDX-License-Identifier: MIT
// mixed_server: the mixed workload. A TCP server on 127.0.0.1 where most requests are cheap and
// some (10 % under bench/mixed_client) also need about 200 us of CPU: a hash over a 4 KiB block,
// `passes` times over. --mode says where that CPU work runs:
//   none     nowhere: heavy requests get the cheap answer (the baseline: no CPU work at all)
//   inline   on the event loop, which serves no other connection meanwhile
//   thread   offload_to_thread (tandem's pool of blocking-call threads)
//   process  offload_to_process (tandem's prefork worker processes)
//   threads  no tandem: a thread per connection with blocking sockets, work in that thread
// Connections are accepted on the main thread in every mode (it also waits for SIGINT/SIGTERM
// and --duration), then served by a coroutine on an io thread, or by their own thread.
// bench/mixed_bench runs every mode under mixed_client's open-loop load and compares the p99
// latency of the cheap requests with the `none` run.
//
// Where the work runs is half of it; the other half is who gets the CPU when the io thread
// wakes while a worker computes on it: --idle-workers (SCHED_IDLE workers) and
// --loop-slice-us (a short scheduler slice for the io threads) are the two ways in here.
//
// Run: build/examples/mixed_server --mode process [--port 9000] [--io-threads 1] [--duration S]
//          [--workers N] [--idle-workers] [--loop-slice-us N]
//      build/examples/mixed_server --self-test   (every mode answers a few requests, exits 0)
// The first line on stdout is "PORT <n>" (--port 0, the default, picks a free port).
// Protocol, 16-byte messages in host byte order (client and server share the machine):
//   request {u32 kind: 0 cheap, 1 heavy; u32 passes; u64 seed}
//   reply   {u32 hashed: 1 if heavy_hash ran, else 0; u32 zero; u64 value}
//   value = heavy_hash(seed, passes) when hashed, else cheap_answer(seed).
#include <tandem/tandem.hpp>

#include "mixed_protocol.hpp"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

namespace {

using namespace mixed;  // request, reply, cheap_answer, heavy_hash (mixed_protocol.hpp)

// ---- options ---------------------------------------------------------------------------------

enum class mode { none, inline_, thread, process, threads };
constexpr const char* mode_names[] = {"none", "inline", "thread", "process", "threads"};

struct options {
    mode how = mode::process;
    std::uint16_t port = 0;
    unsigned io_threads = 1;
    unsigned workers = 0;  // worker processes / blocking threads; 0: tandem's default
    bool idle_workers = false;
    unsigned loop_slice_us = 0;  // 0: the kernel's default slice
    double duration = 0;         // seconds; 0: until SIGINT or SIGTERM
};

// ---- scheduling: who gets the CPU when the io thread wakes ----------------------------------

// --idle-workers: the workers (or blocking threads) run under SCHED_IDLE, so the io thread
// takes their CPU the moment it wakes. Runs once in each worker process (the pool's
// initializer), or on the first job of each blocking thread.
void make_this_thread_idle() {
    sched_param p{};
    (void)::sched_setscheduler(0, SCHED_IDLE, &p);  // 0: the calling thread
}

std::uint64_t heavy_hash_idle(std::uint64_t seed, std::uint32_t passes) {
    thread_local const bool idle = (make_this_thread_idle(), true);
    (void)idle;
    return heavy_hash(seed, passes);
}

// --loop-slice-us N: the io threads ask the EEVDF scheduler (Linux 6.12 and later) for an N us
// slice instead of the default (1.5 ms on 2 CPUs). A waking task with a shorter slice than the
// running one preempts it, so the loop takes its CPU back from a worker or a blocking thread at
// once instead of when that one's slice ends. glibc 2.36 has no sched_setattr() wrapper.
struct sched_attr_v1 {  // struct sched_attr, <linux/sched/types.h>, first version
    std::uint32_t size, policy;
    std::uint64_t flags;
    std::int32_t nice;
    std::uint32_t priority;
    std::uint64_t runtime, deadline, period;
};

tandem::task<> ask_for_slice(unsigned us) {
    const sched_attr_v1 a{sizeof a, SCHED_OTHER, 0, 0, 0, std::uint64_t{us} * 1000, 0, 0};
    if (::syscall(SYS_sched_setattr, 0, &a, 0) != 0) std::perror("mixed_server: sched_setattr");
    co_return;
}

// ---- tandem: a coroutine per connection ------------------------------------------------------

tandem::task<reply> answer(request rq, mode how, bool idle_workers) {
    if (rq.kind == 0 || how == mode::none) co_return reply{0, 0, cheap_answer(rq.seed)};
    const std::uint32_t passes = std::min(rq.passes, max_passes);
    std::uint64_t h = 0;
    if (how == mode::inline_) {
        h = heavy_hash(rq.seed, passes);
    } else if (how == mode::thread) {
        auto* fn = idle_workers ? heavy_hash_idle : heavy_hash;
        h = co_await tandem::offload_to_thread(fn, rq.seed, passes);
    } else {
        h = co_await tandem::offload_to_process(heavy_hash, rq.seed, passes);
    }
    co_return reply{1, 0, h};
}

tandem::task<> serve_connection(tandem::tcp_stream s, mode how, bool idle_workers) {
    std::array<std::byte, 4096> buf;
    std::size_t have = 0;
    try {
        while (std::size_t n = co_await s.read_some(std::span(buf).subspan(have))) {
            have += n;
            std::size_t used = 0;
            for (; have - used >= sizeof(request); used += sizeof(request)) {
                request rq;
                std::memcpy(&rq, buf.data() + used, sizeof rq);
                const reply rp = co_await answer(rq, how, idle_workers);
                co_await s.write_all(std::as_bytes(std::span(&rp, 1)));
            }
            std::memmove(buf.data(), buf.data() + used, have - used);
            have -= used;
        }
    } catch (const std::system_error&) {
        // the client reset the connection
    } catch (const tandem::worker_crashed& e) {
        std::fprintf(stderr, "mixed_server: %s\n", e.what());  // a worker was killed: hang up
    }
}

class tandem_server {
public:
    explicit tandem_server(const options& o) : rt_(runtime_options(o)), opt_(o) {
        // block_on picks the loops in turn: one call reaches each io thread once.
        for (unsigned i = 0; i < o.io_threads && o.loop_slice_us != 0; ++i) {
            rt_.block_on(ask_for_slice(o.loop_slice_us));
        }
    }
    void serve(int fd) { rt_.spawn(serve_connection(tandem::tcp_stream(fd), opt_.how, idle())); }
    // ~runtime cancels the connections' coroutines and shuts the worker processes down.

private:
    static tandem::runtime_options runtime_options(const options& o) {
        tandem::runtime_options r;
        r.io_threads = o.io_threads;
        r.blocking_threads = o.workers;
        r.processes.enabled = o.how == mode::process;
        r.processes.workers = o.workers;
        r.processes.arena_bytes = std::size_t{4} << 20;  // 16-byte jobs: no need for 256 MiB
        if (o.idle_workers) r.processes.initializer = make_this_thread_idle;
        return r;
    }
    bool idle() const { return opt_.idle_workers; }

    tandem::runtime rt_;
    options opt_;
};

// ---- threads: one blocking thread per connection ---------------------------------------------

bool send_all(int fd, const void* data, std::size_t n) {
    const auto* p = static_cast<const char*>(data);
    while (n > 0) {
        const ssize_t r = ::send(fd, p, n, MSG_NOSIGNAL);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return false;
        p += r;
        n -= static_cast<std::size_t>(r);
    }
    return true;
}

void serve_blocking(int fd, std::atomic<bool>* done) {
    std::array<char, 4096> buf;
    std::size_t have = 0;
    for (;;) {
        const ssize_t n = ::recv(fd, buf.data() + have, buf.size() - have, 0);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        have += static_cast<std::size_t>(n);
        std::size_t used = 0;
        bool ok = true;
        for (; ok && have - used >= sizeof(request); used += sizeof(request)) {
            request rq;
            std::memcpy(&rq, buf.data() + used, sizeof rq);
            const reply rp =
                rq.kind == 0 ? reply{0, 0, cheap_answer(rq.seed)}
                             : reply{1, 0, heavy_hash(rq.seed, std::min(rq.passes, max_passes))};
            ok = send_all(fd, &rp, sizeof rp);
        }
        if (!ok) break;
        std::memmove(buf.data(), buf.data() + used, have - used);
        have -= used;
    }
    done->store(true, std::memory_order_release);
}

class thread_server {
public:
    void serve(int fd) {
        reap(false);
        auto c = std::make_unique<conn>();
        c->fd = fd;
        c->thread = std::thread(serve_blocking, fd, &c->done);
        conns_.push_back(std::move(c));
    }
    ~thread_server() { reap(true); }

private:
    struct conn {
        int fd = -1;
        std::atomic<bool> done{false};
        std::thread thread;
    };
    // Joins the threads that have finished (all of them, after a shutdown, if `all`) and closes
    // their sockets; a thread never closes its own, so no fd number is reused under another.
    void reap(bool all) {
        std::erase_if(conns_, [all](const std::unique_ptr<conn>& c) {
            if (all) ::shutdown(c->fd, SHUT_RDWR);
            if (!all && !c->done.load(std::memory_order_acquire)) return false;
            c->thread.join();
            ::close(c->fd);
            return true;
        });
    }
    std::vector<std::unique_ptr<conn>> conns_;  // touched by the accepting thread only
};

// ---- accepting (the main thread, every mode) -------------------------------------------------

/// Accepts on `listen_fd` and hands each connection to `server` until `stop_fd` (a signalfd)
/// fires or `duration` seconds pass.
template <class Server>
void accept_until_stopped(int listen_fd, int stop_fd, double duration, Server& server) {
    const auto deadline = std::chrono::steady_clock::now() +
                          std::chrono::duration<double>(duration > 0 ? duration : 1e9);
    for (;;) {
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
            deadline - std::chrono::steady_clock::now());
        if (left.count() <= 0) return;
        pollfd p[2] = {{listen_fd, POLLIN, 0}, {stop_fd, POLLIN, 0}};
        if (::poll(p, 2, static_cast<int>(std::min<long>(left.count(), 1000))) < 0) continue;
        if (p[1].revents != 0) {
            signalfd_siginfo info;
            (void)!::read(stop_fd, &info, sizeof info);
            return;
        }
        if (p[0].revents == 0) continue;
        const int fd = ::accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
        if (fd < 0) continue;  // the peer gave up already, or EMFILE: try again
        const int one = 1;     // replies are single small writes: no Nagle delay
        ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        server.serve(fd);
    }
}

void run(const options& o, int listen_fd, int stop_fd) {
    if (o.how == mode::threads) {
        thread_server server;
        accept_until_stopped(listen_fd, stop_fd, o.duration, server);
    } else {
        tandem_server server(o);
        accept_until_stopped(listen_fd, stop_fd, o.duration, server);
    }
}

// ---- the self-test: each mode answers cheap and heavy requests --------------------------------

bool self_test_client(std::uint16_t port) {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    const sockaddr_in to{AF_INET, htons(port), {htonl(INADDR_LOOPBACK)}, {}};
    bool ok = ::connect(fd, reinterpret_cast<const sockaddr*>(&to), sizeof to) == 0;
    for (std::uint32_t i = 0; ok && i < 20; ++i) {
        const request rq{i % 3 == 0 ? 1u : 0u, 3, splitmix64(i)};
        reply rp{};
        ok = send_all(fd, &rq, sizeof rq) &&
             ::recv(fd, &rp, sizeof rp, MSG_WAITALL) == static_cast<ssize_t>(sizeof rp);
        const std::uint64_t want =
            rp.hashed != 0 ? heavy_hash(rq.seed, rq.passes) : cheap_answer(rq.seed);
        ok = ok && rp.value == want && (rp.hashed == 0 || rq.kind == 1);
    }
    ::close(fd);
    ::kill(::getpid(), SIGTERM);  // stops the server, through its signalfd
    return ok;
}

int self_test(int stop_fd) {
    int failed = 0;
    for (mode how : {mode::none, mode::inline_, mode::thread, mode::process, mode::threads}) {
        options o;
        o.how = how;
        auto listener = tandem::tcp_listener::bind(tandem::address::loopback(0));
        bool ok = false;
        std::thread client;
        auto start_client = [&] {
            client = std::thread(
                [&ok, port = listener.local_address().port()] { ok = self_test_client(port); });
        };
        if (how == mode::threads) {
            thread_server server;
            start_client();
            accept_until_stopped(listener.native_handle(), stop_fd, 30, server);
        } else {
            tandem_server server(o);  // made before the client thread: the zygote forks alone
            start_client();
            accept_until_stopped(listener.native_handle(), stop_fd, 30, server);
        }
        client.join();
        std::printf("self-test %-8s %s\n", mode_names[static_cast<int>(how)], ok ? "ok" : "FAILED");
        std::fflush(stdout);  // before the next runtime forks its zygote
        failed += ok ? 0 : 1;
    }
    return failed == 0 ? 0 : 1;
}

// ---- main ------------------------------------------------------------------------------------

void usage(std::FILE* to) {
    std::fprintf(to,
                 "usage: mixed_server [--mode none|inline|thread|process|threads] [--port N]\n"
                 "                    [--io-threads N] [--workers N] [--idle-workers]\n"
                 "                    [--loop-slice-us N] [--duration SECONDS] | --self-test\n"
                 "  --workers N        worker processes (process) or blocking threads (thread);\n"
                 "                     0 (default): tandem's default, one per core\n"
                 "  --idle-workers     run the workers / blocking threads under SCHED_IDLE\n"
                 "  --loop-slice-us N  ask for an N us scheduler slice for the io threads\n"
                 "Prints \"PORT <n>\" first; stops on SIGINT, SIGTERM or after --duration.\n");
}

/// Parses argv into *o; returns -1 to go on, else the exit status.
int parse(int argc, char** argv, options* o, bool* self_test_wanted) {
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        const char* v = i + 1 < argc ? argv[i + 1] : nullptr;
        if (a == "--help" || a == "-h") return usage(stdout), 0;
        if (a == "--self-test") {
            *self_test_wanted = true;
        } else if (v != nullptr && a == "--loop-slice-us") {
            o->loop_slice_us = static_cast<unsigned>(std::atoi(v));
            ++i;
        } else if (a == "--idle-workers") {
            o->idle_workers = true;
        } else if (v != nullptr && a == "--mode") {
            int m = 0;
            while (m < 5 && std::strcmp(mode_names[m], v) != 0) ++m;
            if (m == 5) return usage(stderr), 2;
            o->how = static_cast<mode>(m);
            ++i;
        } else if (v != nullptr && (a == "--port" || a == "--io-threads" || a == "--workers" ||
                                    a == "--duration")) {
            const double x = std::atof(v);
            if (a == "--port") o->port = static_cast<std::uint16_t>(x);
            if (a == "--io-threads") o->io_threads = std::max(1u, static_cast<unsigned>(x));
            if (a == "--workers") o->workers = static_cast<unsigned>(x);
            if (a == "--duration") o->duration = x;
            ++i;
        } else {
            return usage(stderr), 2;
        }
    }
    return -1;
}

}  // namespace

int main(int argc, char** argv) {
    options o;
    bool self_test_wanted = false;
    if (const int status = parse(argc, argv, &o, &self_test_wanted); status >= 0) return status;
    // Before any thread exists: every thread inherits the mask, so SIGINT and SIGTERM reach
    // only the signalfd that the accepting loop polls.
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGINT);
    sigaddset(&stop_signals, SIGTERM);
    ::sigprocmask(SIG_BLOCK, &stop_signals, nullptr);
    const int stop_fd = ::signalfd(-1, &stop_signals, SFD_CLOEXEC);
    rlimit files{};  // a connection costs an fd: lift the soft limit
    ::getrlimit(RLIMIT_NOFILE, &files);
    files.rlim_cur = files.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &files);
    try {
        if (self_test_wanted) return self_test(stop_fd);
        auto listener = tandem::tcp_listener::bind(tandem::address::loopback(o.port));
        std::printf("PORT %u\n", static_cast<unsigned>(listener.local_address().port()));
        std::fflush(stdout);
        run(o, listener.native_handle(), stop_fd);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "mixed_server: %s\n", e.what());
        return 1;
    }
    return 0;
}
