// SPDX-License-Identifier: MIT
#pragma once

// What the HTTP load peers of http_bench share: the command line, the latency histogram,
// llhttp glue and the RESULT / IDLE lines. examples/http_load.cpp speaks the same protocol
// with its own code (examples do not include bench/):
//
//   PROG --url http://127.0.0.1:PORT/path --connections N (--requests TOTAL | --duration S)
//        [--threads N] [--mode M] [--idle N]       (also --name=value)
//
// Workload: N keep-alive connections, all opened before the load phase starts; each sends GET
// requests one after another (no pipelining). A response is ok if its status is 200 and its
// whole body arrived; any other status, a parse error, EOF or a socket error counts as one
// error (after a connection-level error the connection is opened again; a failed connect is
// one more error). "Connection: close" from the server is obeyed: reconnect, no error.
// --requests TOTAL stops after TOTAL requests were sent (ok + errors = TOTAL, give or take
// the failed connects); --duration S stops sending S seconds after the load phase began.
// The request is exactly "GET <path> HTTP/1.1\r\nHost: <host>:<port>\r\n\r\n" (wrk's).
// Every socket has TCP_NODELAY. Responses are parsed with llhttp, with no callback but
// on_message_complete, so every peer pays the same for parsing.
//
// Last line on stdout:
//   RESULT requests=<ok> errors=<n> seconds=<load phase, wall> p50_us=<> p99_us=<> p999_us=<>
// requests and errors are integers; the rest decimals ("%.3f" for seconds, "%.1f" for the
// latencies). Latency is per ok request, from just before its send to its last byte parsed.
// The load phase is from the first send to the last response (connecting is not in it).
//
// --idle N (instead of --connections/--requests/--duration): open N connections, make one
// request on each, keep them all open and waiting to read, then print
//   IDLE connections=<N that made their request> rss_before_kb=<A> rss_after_kb=<B>
// with A measured before the first connection was opened and B once all are idle (VmRSS,
// from /proc/self/statm), each just after malloc_trim(0) (memory the burst of connects and
// requests used and gave back is not the idle cost), and exit.

#include <llhttp.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <string_view>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <unistd.h>

namespace http_peer {

struct peer_args {
    std::string url, host, path;
    std::uint16_t port = 0;
    sockaddr_in address{};
    int connections = 0;
    long long requests = 0;  ///< 0: run for `duration` instead
    double duration = 0;
    int threads = 0;  ///< 0: the peer's default
    int idle = 0;     ///< > 0: the --idle mode
    std::string mode;
    std::string request;  ///< the bytes of one request
};

[[noreturn]] inline void usage(const char* prog, const char* why) {
    std::fprintf(stderr,
                 "%s: %s\nusage: %s --url http://127.0.0.1:PORT/path --connections N "
                 "(--requests TOTAL | --duration SECONDS) [--threads N] [--mode M]\n"
                 "       %s --url URL --idle N\n",
                 prog, why, prog, prog);
    std::exit(2);
}

/// Only "http://<IPv4 or localhost>:<port><path>": the peers talk to the local nginx.
inline bool parse_url(peer_args& a) {
    std::string_view u = a.url;
    if (u.substr(0, 7) != "http://") return false;
    u.remove_prefix(7);
    const std::size_t slash = u.find('/');
    const std::string_view authority = u.substr(0, slash);
    a.path = slash == std::string_view::npos ? "/" : std::string(u.substr(slash));
    const std::size_t colon = authority.rfind(':');
    a.host = std::string(authority.substr(0, colon));
    const long port =
        colon == std::string_view::npos
            ? 80
            : std::strtol(std::string(authority.substr(colon + 1)).c_str(), nullptr, 10);
    if (port <= 0 || port > 65535) return false;
    a.port = static_cast<std::uint16_t>(port);
    a.address.sin_family = AF_INET;
    a.address.sin_port = htons(a.port);
    const std::string ip = a.host == "localhost" ? "127.0.0.1" : a.host;
    if (::inet_pton(AF_INET, ip.c_str(), &a.address.sin_addr) != 1) return false;
    a.request = "GET " + a.path + " HTTP/1.1\r\nHost: " + a.host + ":" + std::to_string(a.port) +
                "\r\n\r\n";
    return true;
}

/// Exits with status 2 and a usage message on a bad command line.
inline peer_args parse_args(int argc, char** argv) {
    peer_args a;
    for (int i = 1; i < argc; ++i) {
        std::string name = argv[i], value;
        if (const std::size_t eq = name.find('='); eq != std::string::npos) {
            value = name.substr(eq + 1);
            name.resize(eq);
        } else if (i + 1 < argc) {
            value = argv[++i];
        } else {
            usage(argv[0], ("no value for " + name).c_str());
        }
        if (name == "--url")
            a.url = value;
        else if (name == "--connections")
            a.connections = std::atoi(value.c_str());
        else if (name == "--requests")
            a.requests = std::atoll(value.c_str());
        else if (name == "--duration")
            a.duration = std::atof(value.c_str());
        else if (name == "--threads")
            a.threads = std::atoi(value.c_str());
        else if (name == "--idle")
            a.idle = std::atoi(value.c_str());
        else if (name == "--mode")
            a.mode = value;
        else
            usage(argv[0], ("unknown option " + name).c_str());
    }
    if (!parse_url(a)) usage(argv[0], "--url must be http://<IPv4>:<port>/<path>");
    if (a.threads < 0) usage(argv[0], "--threads must be >= 1 (0: the peer's default)");
    if (a.idle > 0) return a;
    if (a.connections < 1) usage(argv[0], "--connections must be >= 1");
    if ((a.requests > 0) == (a.duration > 0)) usage(argv[0], "give --requests or --duration");
    return a;
}

/// Lets the soft fd limit reach the hard one: 10,000 connections need more than 1,024.
inline void raise_fd_limit() {
    rlimit r{};
    if (::getrlimit(RLIMIT_NOFILE, &r) == 0 && r.rlim_cur < r.rlim_max) {
        r.rlim_cur = r.rlim_max;
        ::setrlimit(RLIMIT_NOFILE, &r);
    }
}

inline std::int64_t now_ns() {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(
               std::chrono::steady_clock::now().time_since_epoch())
        .count();
}

/// Resident set size in KiB, from /proc/self/statm.
inline long rss_kb() {
    long pages = 0, resident = 0;
    std::ifstream("/proc/self/statm") >> pages >> resident;
    return resident * (::sysconf(_SC_PAGESIZE) / 1024);
}

/// Latencies in ns, log-linear buckets (1/64 relative precision); record() is wait-free and
/// may be called from any thread.
class latency_histogram {
public:
    void record(std::int64_t ns) {
        counts_[bucket(static_cast<std::uint64_t>(std::max<std::int64_t>(ns, 0)))].fetch_add(
            1, std::memory_order_relaxed);
    }
    /// The q-quantile in microseconds (the middle of its bucket); 0 when empty.
    double quantile_us(double q) const {
        std::uint64_t total = 0;
        for (const auto& c : counts_) total += c.load(std::memory_order_relaxed);
        if (total == 0) return 0;
        const auto rank = std::max<std::uint64_t>(
            1, static_cast<std::uint64_t>(std::ceil(q * static_cast<double>(total))));
        std::uint64_t seen = 0;
        for (std::size_t b = 0; b < counts_.size(); ++b) {
            seen += counts_[b].load(std::memory_order_relaxed);
            if (seen >= rank) return middle(b) / 1e3;
        }
        return middle(counts_.size() - 1) / 1e3;
    }

private:
    static constexpr unsigned sub_bits = 7;  // values below 128 ns are exact
    static constexpr std::size_t sub = std::size_t{1} << sub_bits;
    static constexpr unsigned max_msb = 47;  // ~39 hours: anything above lands in the last
    static std::size_t bucket(std::uint64_t v) {
        if (v < sub) return v;
        const unsigned msb = std::min(63U - static_cast<unsigned>(__builtin_clzll(v)), max_msb);
        const unsigned shift = msb - (sub_bits - 1);
        const std::size_t m = std::min<std::uint64_t>(v >> shift, sub - 1);  // [64, 128)
        return sub + (msb - sub_bits) * (sub / 2) + (m - sub / 2);
    }
    static double middle(std::size_t b) {
        if (b < sub) return static_cast<double>(b);
        const std::size_t msb = (b - sub) / (sub / 2) + sub_bits;
        const std::size_t m = (b - sub) % (sub / 2) + sub / 2;
        const double width = std::ldexp(1.0, static_cast<int>(msb - (sub_bits - 1)));
        return static_cast<double>(m) * width + width / 2;
    }
    std::array<std::atomic<std::uint64_t>, sub + (max_msb - sub_bits + 1) * (sub / 2)> counts_{};
};

/// Counts, stop condition and latencies of one run, shared by all connections.
class load_state {
public:
    explicit load_state(const peer_args& a) : requests_(a.requests), duration_(a.duration) {}
    /// Starts the load phase: the clock for --duration and for `seconds`.
    void start() {
        start_ns_ = now_ns();
        deadline_ns_ = start_ns_ + static_cast<std::int64_t>(duration_ * 1e9);
    }
    /// May one more request be sent? Takes a request out of --requests' budget.
    bool next() {
        if (requests_ > 0) return sent_.fetch_add(1, std::memory_order_relaxed) < requests_;
        return now_ns() < deadline_ns_;
    }
    void ok(std::int64_t latency_ns) {
        ok_.fetch_add(1, std::memory_order_relaxed);
        latencies_.record(latency_ns);
    }
    void error() { errors_.fetch_add(1, std::memory_order_relaxed); }
    /// Ends the load phase: call once every connection has stopped.
    void stop() { stop_ns_ = now_ns(); }
    long long ok_count() const { return ok_.load(); }

    void print_result() const {
        std::printf(
            "RESULT requests=%lld errors=%lld seconds=%.3f p50_us=%.1f p99_us=%.1f "
            "p999_us=%.1f\n",
            ok_.load(), errors_.load(), static_cast<double>(stop_ns_ - start_ns_) / 1e9,
            latencies_.quantile_us(0.50), latencies_.quantile_us(0.99),
            latencies_.quantile_us(0.999));
        std::fflush(stdout);
    }

private:
    const long long requests_;
    const double duration_;
    std::int64_t start_ns_ = 0, deadline_ns_ = 0, stop_ns_ = 0;
    std::atomic<long long> sent_{0}, ok_{0}, errors_{0};
    latency_histogram latencies_;
};

inline void print_idle(int connections, long rss_before_kb, long rss_after_kb) {
    std::printf("IDLE connections=%d rss_before_kb=%ld rss_after_kb=%ld\n", connections,
                rss_before_kb, rss_after_kb);
    std::fflush(stdout);
}

/// One connection's llhttp response parser. feed() stops at the end of a response; bytes
/// after it (the peers never pipeline, so the server never sends any) are an error.
class response_parser {
public:
    enum class outcome { more, done, bad };

    response_parser() { reset(); }
    response_parser(const response_parser&) = delete;
    response_parser& operator=(const response_parser&) = delete;

    /// For a new connection.
    void reset() {
        llhttp_init(&parser_, HTTP_RESPONSE, &settings());
        parser_.data = this;
        done_ = false;
    }

    outcome feed(const char* data, std::size_t n) {
        const llhttp_errno e = llhttp_execute(&parser_, data, n);
        if (e == HPE_OK) return outcome::more;
        if (e != HPE_PAUSED || !done_) return outcome::bad;
        const bool all_used = llhttp_get_error_pos(&parser_) == data + n;
        llhttp_resume(&parser_);
        done_ = false;
        return all_used ? outcome::done : outcome::bad;
    }
    /// The peer closed: completes a response delimited by the end of the stream.
    outcome finish() {
        const llhttp_errno e = llhttp_finish(&parser_);
        if (e == HPE_PAUSED && done_) {
            llhttp_resume(&parser_);
            done_ = false;
            return outcome::done;
        }
        return outcome::bad;
    }
    /// The last complete response's status and whether its connection stays open.
    int status() const { return status_; }
    bool keep_alive() const { return keep_alive_; }

private:
    static int on_message_complete(llhttp_t* p) {
        auto* self = static_cast<response_parser*>(p->data);
        self->status_ = p->status_code;
        self->keep_alive_ = llhttp_should_keep_alive(p) != 0;
        self->done_ = true;
        return HPE_PAUSED;  // stop right after this response
    }
    static const llhttp_settings_t& settings() {
        static const llhttp_settings_t s = [] {
            llhttp_settings_t t;
            llhttp_settings_init(&t);
            t.on_message_complete = on_message_complete;
            return t;
        }();
        return s;
    }

    llhttp_t parser_{};
    int status_ = 0;
    bool keep_alive_ = false;
    bool done_ = false;
};

/// Receive buffer of every peer: a response to the benchmark's GET (1 KiB body) fits.
constexpr std::size_t recv_buffer_bytes = 4096;

}  // namespace http_peer
