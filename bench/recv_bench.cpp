// SPDX-License-Identifier: MIT
// Receive-path benchmark: which way of reading TCP sockets through io_uring
// tandem should use by default.
//
//   recv/<N>_<S>              one IORING_OP_RECV per connection into its own
//                             buffer, re-armed after every completion
//   multishot_bufring/<N>_<S> one multishot RECV per connection that picks
//                             buffers from a registered provided-buffer ring;
//                             re-armed only when a CQE lacks IORING_CQE_F_MORE
//
// Workload, one process and one thread: N loopback TCP connections; each
// iteration the peer ends push 64 messages of S bytes per connection with
// plain non-blocking send() (one call per connection for whatever fits in the
// socket buffer), and the receiver reaps completions until every byte is back.
// The ring is set up by tandem's own code (lib/ring_setup.cpp), so the flags
// are the ones tandem runs with.
//
// Cost is the thread's CPU time. On loopback the kernel's receive path runs
// inside the sender's send() on this same thread, so both peers pay the same
// sending cost and the ratio understates the difference between the receive
// paths themselves. After the normal output a summary prints ns per message
// for both peers, the ratio, and which one is faster overall.

#include "ring_setup.hpp"

#include <benchmark/benchmark.h>
#include <liburing.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

namespace {

constexpr std::size_t msgs_per_conn = 64;
// The same receive size for both peers, so neither wins by reading more per
// completion: 16 KiB holds 256 small messages or 4 large ones.
constexpr std::size_t buf_size = 16 * 1024;
constexpr unsigned sq_entries = 1024;  // runtime_options' default ring size
// The provided ring holds four buffers per connection (at least 64): fewer
// turns the large-message runs into a measurement of -ENOBUFS re-arming, and
// many more would cycle through memory that plain recv never touches.
unsigned bufring_entries_for(std::size_t n) {
    unsigned e = 64;
    while (e < 4 * n) e *= 2;
    return e;
}
constexpr std::uint16_t group_id = 1;
constexpr std::uint64_t cancel_tag = ~std::uint64_t{0};

std::string errno_text(const char* what, int err) {
    return std::string(what) + ": " + std::strerror(err);
}

/// N loopback TCP connections, tx[i] sending to rx[i].
struct connections {
    std::vector<int> tx;
    std::vector<int> rx;
    std::string error;

    explicit connections(int n) {
        int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (lfd < 0) {
            error = errno_text("socket", errno);
            return;
        }
        sockaddr_in addr{};
        addr.sin_family = AF_INET;
        addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        socklen_t len = sizeof addr;
        auto* sa = reinterpret_cast<sockaddr*>(&addr);
        if (bind(lfd, sa, len) != 0 || listen(lfd, n) != 0 || getsockname(lfd, sa, &len) != 0) {
            error = errno_text("bind/listen", errno);
        }
        for (int i = 0; i < n && error.empty(); ++i) connect_one(lfd, sa, len);
        close(lfd);
    }

    ~connections() {
        // RST instead of FIN: thousands of connections per run would
        // otherwise leave their ports in TIME_WAIT and exhaust the range.
        linger hard{1, 0};
        for (int fd : tx) {
            setsockopt(fd, SOL_SOCKET, SO_LINGER, &hard, sizeof hard);
            close(fd);
        }
        for (int fd : rx) close(fd);
    }
    connections(const connections&) = delete;
    connections& operator=(const connections&) = delete;

private:
    // Connecting then accepting at once keeps tx[i] and rx[i] the two ends
    // of the same connection.
    void connect_one(int lfd, const sockaddr* sa, socklen_t len) {
        int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (c < 0) {
            error = errno_text("socket", errno);
            return;
        }
        tx.push_back(c);
        if (connect(c, sa, len) != 0) {
            error = errno_text("connect", errno);
            return;
        }
        int a = accept4(lfd, nullptr, nullptr, SOCK_CLOEXEC);
        if (a < 0) {
            error = errno_text("accept", errno);
            return;
        }
        rx.push_back(a);
        // Without NODELAY the last small segment of a batch can wait for a
        // delayed ACK (40 ms) and the benchmark would measure that.
        int one = 1;
        setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
};

/// A ring with tandem's flags; setup_ring throws with a fix-it message if
/// io_uring is unavailable.
struct ring {
    io_uring r{};
    std::string flags;
    ring() { flags = tandem::detail::setup_ring(&r, sq_entries).description; }
    ~ring() { io_uring_queue_exit(&r); }
    ring(const ring&) = delete;
    ring& operator=(const ring&) = delete;

    io_uring_sqe* sqe() {
        for (;;) {
            if (io_uring_sqe* s = io_uring_get_sqe(&r)) return s;
            io_uring_submit(&r);
        }
    }
};

/// Peer (a): one plain RECV per connection into that connection's buffer.
struct plain_recv {
    ring& rg;
    const connections& c;
    std::vector<char> bufs;
    int armed = 0;
    std::string error;

    plain_recv(ring& g, const connections& cs) : rg(g), c(cs), bufs(cs.rx.size() * buf_size) {}

    void arm(std::size_t i) {
        io_uring_sqe* s = rg.sqe();
        io_uring_prep_recv(s, c.rx[i], bufs.data() + i * buf_size, buf_size, 0);
        io_uring_sqe_set_data64(s, i);
        ++armed;
    }

    /// Bytes received, or -errno. Every completion ends the request.
    int complete(const io_uring_cqe* cqe, bool rearm) {
        --armed;
        if (cqe->res > 0 && rearm) arm(cqe->user_data);
        return cqe->res;
    }
    void after_reap() {}
    long enobufs() const { return 0; }
};

/// Peer (b): one multishot RECV per connection, buffers from a provided ring.
struct multishot_bufring {
    ring& rg;
    const connections& c;
    std::vector<char> bufs;
    unsigned entries;
    io_uring_buf_ring* br = nullptr;
    std::size_t br_bytes;
    int returned = 0;  // buffers added since the last advance
    long enobufs_ = 0;
    int armed = 0;
    std::string error;

    multishot_bufring(ring& g, const connections& cs)
        : rg(g),
          c(cs),
          entries(bufring_entries_for(cs.rx.size())),
          br_bytes(entries * sizeof(io_uring_buf)) {
        bufs.resize(std::size_t{entries} * buf_size);
        // The kernel maps the ring itself, so it must be page aligned: mmap.
        void* mem =
            mmap(nullptr, br_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (mem == MAP_FAILED) {
            error = errno_text("mmap", errno);
            return;
        }
        br = static_cast<io_uring_buf_ring*>(mem);
        io_uring_buf_ring_init(br);
        io_uring_buf_reg reg{};
        reg.ring_addr = reinterpret_cast<std::uintptr_t>(br);
        reg.ring_entries = entries;
        reg.bgid = group_id;
        if (int r = io_uring_register_buf_ring(&rg.r, &reg, 0); r < 0) {
            error = errno_text("io_uring_register_buf_ring", -r);
            return;
        }
        for (unsigned b = 0; b < entries; ++b) give_back(static_cast<std::uint16_t>(b));
        after_reap();
    }
    ~multishot_bufring() {
        if (br == nullptr) return;
        io_uring_unregister_buf_ring(&rg.r, group_id);
        munmap(br, br_bytes);
    }
    multishot_bufring(const multishot_bufring&) = delete;
    multishot_bufring& operator=(const multishot_bufring&) = delete;

    void give_back(std::uint16_t bid) {
        io_uring_buf_ring_add(br, bufs.data() + std::size_t{bid} * buf_size, buf_size, bid,
                              io_uring_buf_ring_mask(entries), returned++);
    }

    void arm(std::size_t i) {
        io_uring_sqe* s = rg.sqe();
        io_uring_prep_recv_multishot(s, c.rx[i], nullptr, 0, 0);
        s->flags |= IOSQE_BUFFER_SELECT;
        s->buf_group = group_id;
        io_uring_sqe_set_data64(s, i);
        ++armed;
    }

    /// Bytes received, or -errno. -ENOBUFS ends the request but loses no
    /// data: re-arming once buffers are back picks it up.
    int complete(const io_uring_cqe* cqe, bool rearm) {
        // "Consuming" the data is counting it, so the buffer goes straight back.
        if ((cqe->flags & IORING_CQE_F_BUFFER) != 0) {
            give_back(static_cast<std::uint16_t>(cqe->flags >> IORING_CQE_BUFFER_SHIFT));
        }
        if (cqe->res == -ENOBUFS) ++enobufs_;
        if ((cqe->flags & IORING_CQE_F_MORE) == 0) {
            --armed;
            if (rearm && (cqe->res > 0 || cqe->res == -ENOBUFS)) arm(cqe->user_data);
        }
        return cqe->res;
    }
    // One release store per reap batch publishes all returned buffers. It
    // runs before the next submit, so re-armed requests see them.
    void after_reap() {
        if (returned == 0) return;
        io_uring_buf_ring_advance(br, returned);
        returned = 0;
    }
    long enobufs() const { return enobufs_; }
};

/// Peer (c): peer (b) plus what a `read_some(span)` on top of it must add: each
/// message is copied out of the ring buffer into the caller's buffer before the
/// ring buffer goes back (plain RECV writes into the caller's buffer directly).
struct multishot_bufring_copy : multishot_bufring {
    std::vector<char> dest = std::vector<char>(buf_size);

    using multishot_bufring::multishot_bufring;

    int complete(const io_uring_cqe* cqe, bool rearm) {
        if ((cqe->flags & IORING_CQE_F_BUFFER) != 0 && cqe->res > 0) {
            const auto bid = static_cast<std::size_t>(cqe->flags >> IORING_CQE_BUFFER_SHIFT);
            std::memcpy(dest.data(), bufs.data() + bid * buf_size,
                        static_cast<std::size_t>(cqe->res));
            benchmark::DoNotOptimize(dest.data());
        }
        return multishot_bufring::complete(cqe, rearm);
    }
};

/// Reaps what is in the CQ into got[]. While running (rearm true) a failed or
/// ended receive sets *error; in teardown -ECANCELED is the expected result.
template <class Peer>
void reap(Peer& p, std::vector<std::size_t>& got, std::size_t* total, long* cqes, bool rearm,
          std::string* error) {
    unsigned head;
    unsigned seen = 0;
    io_uring_cqe* cqe;
    io_uring_for_each_cqe(&p.rg.r, head, cqe) {
        ++seen;
        if (cqe->user_data == cancel_tag) continue;
        int r = p.complete(cqe, rearm);
        if (r > 0) {
            got[cqe->user_data] += static_cast<std::size_t>(r);
            *total += static_cast<std::size_t>(r);
        } else if (rearm && r != -ENOBUFS && error->empty()) {
            *error = r == 0 ? std::string("unexpected end of stream") : errno_text("receive", -r);
        }
    }
    io_uring_cq_advance(&p.rg.r, seen);
    p.after_reap();
    *cqes += seen;
}

/// Sends what fits of each remaining connection's batch; drops finished ones.
void push(const connections& c, const std::vector<char>& src, std::vector<std::size_t>& unsent,
          std::vector<std::size_t>& sending, std::string* error) {
    std::size_t keep = 0;
    for (std::size_t i : sending) {
        ssize_t w = send(c.tx[i], src.data() + (src.size() - unsent[i]), unsent[i],
                         MSG_DONTWAIT | MSG_NOSIGNAL);
        if (w > 0) {
            unsent[i] -= static_cast<std::size_t>(w);
        } else if (w < 0 && errno != EAGAIN && error->empty()) {
            *error = errno_text("send", errno);
        }
        if (unsent[i] != 0) sending[keep++] = i;
    }
    sending.resize(keep);
}

/// Cancels every armed request and waits for the last completion, so the
/// kernel writes no buffer after it is freed.
template <class Peer>
void stop(Peer& p, std::vector<std::size_t>& got, std::size_t* total) {
    io_uring_sqe* s = p.rg.sqe();
    io_uring_prep_cancel64(s, 0, IORING_ASYNC_CANCEL_ANY);
    io_uring_sqe_set_data64(s, cancel_tag);
    __kernel_timespec patience{5, 0};
    long cqes = 0;
    std::string ignored;
    while (p.armed > 0) {
        io_uring_cqe* cqe;
        if (io_uring_submit_and_wait_timeout(&p.rg.r, &cqe, 1, &patience, nullptr) == -ETIME) {
            std::fprintf(stderr, "recv_bench: %d requests survived cancellation\n", p.armed);
            return;
        }
        reap(p, got, total, &cqes, false, &ignored);
    }
}

/// One benchmark run: N connections, messages of `size` bytes, peer P.
template <class Peer>
void run(benchmark::State& state, std::size_t n, std::size_t size) {
    connections c(static_cast<int>(n));
    if (!c.error.empty()) {
        state.SkipWithError(c.error.c_str());
        return;
    }
    ring rg;
    Peer p(rg, c);
    if (!p.error.empty()) {
        state.SkipWithError(p.error.c_str());
        return;
    }
    const std::vector<char> src(msgs_per_conn * size, 'x');
    std::vector<std::size_t> unsent(n);
    std::vector<std::size_t> sending;
    std::vector<std::size_t> got(n);
    std::size_t total = 0;
    long cqes = 0;
    std::string error;
    for (std::size_t i = 0; i < n; ++i) p.arm(i);
    // Nothing may hang: a stalled receive path fails the run instead.
    __kernel_timespec patience{5, 0};
    for (auto _ : state) {
        std::fill(unsent.begin(), unsent.end(), src.size());
        sending.clear();
        for (std::size_t i = 0; i < n; ++i) sending.push_back(i);
        const std::size_t want = total + n * src.size();
        while (error.empty() && total < want) {
            if (!sending.empty()) push(c, src, unsent, sending, &error);
            io_uring_cqe* cqe;
            int r = io_uring_submit_and_wait_timeout(&rg.r, &cqe, 1, &patience, nullptr);
            if (r == -ETIME) {
                error = "no completion for 5 s";
            } else if (r < 0 && r != -EINTR && error.empty()) {
                error = errno_text("io_uring_submit_and_wait_timeout", -r);
            }
            reap(p, got, &total, &cqes, true, &error);
        }
        if (!error.empty()) {
            state.SkipWithError(error.c_str());
            break;
        }
    }
    const long enobufs = p.enobufs();
    stop(p, got, &total);
    if (!error.empty()) return;
    const auto iters = static_cast<std::size_t>(state.iterations());
    for (std::size_t i = 0; i < n; ++i) {
        if (got[i] != iters * src.size()) {
            error = "connection " + std::to_string(i) + " received " + std::to_string(got[i]) +
                    " bytes, expected " + std::to_string(iters * src.size());
            state.SkipWithError(error.c_str());
            return;
        }
    }
    const auto msgs = static_cast<double>(iters * n * msgs_per_conn);
    state.SetItemsProcessed(static_cast<std::int64_t>(iters * n * msgs_per_conn));
    state.SetBytesProcessed(static_cast<std::int64_t>(iters * n * src.size()));
    state.counters["cqe/msg"] = static_cast<double>(cqes) / msgs;
    state.counters["enobufs"] =
        benchmark::Counter(static_cast<double>(enobufs), benchmark::Counter::kAvgIterations);
}

constexpr std::size_t conn_counts[] = {1, 64, 1024};
constexpr std::size_t msg_sizes[] = {64, 4096};

std::string config(std::size_t n, std::size_t s) {
    return std::to_string(n) + "_" + std::to_string(s);
}

void register_all() {
    for (std::size_t n : conn_counts) {
        for (std::size_t s : msg_sizes) {
            benchmark::RegisterBenchmark(
                ("recv/" + config(n, s)).c_str(),
                [n, s](benchmark::State& st) { run<plain_recv>(st, n, s); })
                ->Unit(benchmark::kMicrosecond);
            benchmark::RegisterBenchmark(
                ("multishot_bufring/" + config(n, s)).c_str(),
                [n, s](benchmark::State& st) { run<multishot_bufring>(st, n, s); })
                ->Unit(benchmark::kMicrosecond);
            benchmark::RegisterBenchmark(
                ("multishot_bufring_copy/" + config(n, s)).c_str(),
                [n, s](benchmark::State& st) { run<multishot_bufring_copy>(st, n, s); })
                ->Unit(benchmark::kMicrosecond);
        }
    }
}

// ---- summary -----------------------------------------------------------------------------

/// The console reporter, plus a table of CPU ns per message for both peers.
class summary_reporter : public benchmark::ConsoleReporter {
public:
    explicit summary_reporter(bool color) : ConsoleReporter(color ? OO_ColorTabular : OO_Tabular) {}

    void ReportRuns(const std::vector<Run>& runs) override {
        for (const Run& r : runs) {
            if (r.run_type != Run::RT_Iteration || r.error_occurred) continue;
            double cpu_ns =
                r.GetAdjustedCPUTime() * 1e9 / benchmark::GetTimeUnitMultiplier(r.time_unit);
            cpu_ns_[r.benchmark_name()].push_back(cpu_ns);
        }
        ConsoleReporter::ReportRuns(runs);
    }

    void print_summary() const {
        std::printf(
            "\nSummary: CPU ns per message (median over repetitions); ratios against recv, "
            "below 1 means cheaper than recv.\n"
            "bufring: multishot + provided buffers; +copy: the same, copying each message into "
            "the caller's buffer as read_some(span) would have to\n");
        std::printf("%6s %6s %9s %9s %7s %9s %7s\n", "N", "S", "recv", "bufring", "ratio", "+copy",
                    "ratio");
        double log_sum = 0;
        int pairs = 0;
        int copy_wins = 0;
        for (std::size_t n : conn_counts) {
            for (std::size_t s : msg_sizes) {
                const double msgs = static_cast<double>(n * msgs_per_conn);
                double a = median("recv/" + config(n, s)) / msgs;
                double b = median("multishot_bufring/" + config(n, s)) / msgs;
                double c = median("multishot_bufring_copy/" + config(n, s)) / msgs;
                if (!(a > 0) || !(b > 0) || !(c > 0)) {
                    std::printf("%6zu %6zu %9s %9s %7s %9s %7s\n", n, s, "-", "-", "-", "-", "-");
                    continue;
                }
                std::printf("%6zu %6zu %9.1f %9.1f %7.2f %9.1f %7.2f\n", n, s, a, b, b / a, c,
                            c / a);
                log_sum += std::log(c / a);
                ++pairs;
                if (c < a) ++copy_wins;
            }
        }
        if (pairs > 0) {
            double geo = std::exp(log_sum / pairs);
            std::printf(
                "Verdict for read_some(span): %s (geometric mean ratio of +copy to recv %.2f; "
                "+copy cheaper in %d of %d configurations)\n",
                geo < 1 ? "multishot_bufring" : "recv", geo, copy_wins, pairs);
        }
        std::fflush(stdout);
    }

private:
    double median(const std::string& name) const {
        auto it = cpu_ns_.find(name);
        if (it == cpu_ns_.end() || it->second.empty()) return 0;
        std::vector<double> v = it->second;
        std::sort(v.begin(), v.end());
        return v[v.size() / 2];
    }
    std::map<std::string, std::vector<double>> cpu_ns_;
};

}  // namespace

int main(int argc, char** argv) {
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
    {
        ring probe;
        benchmark::AddCustomContext("io_uring setup", probe.flags);
    }
    register_all();
    summary_reporter reporter(isatty(STDOUT_FILENO) != 0);
    benchmark::RunSpecifiedBenchmarks(&reporter);
    reporter.print_summary();
    benchmark::Shutdown();
    return 0;
}
