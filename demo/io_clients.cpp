// SPDX-License-Identifier: MIT
// The I/O section's three clients, each run in a child process of its own (io_section.hpp):
//
//   io-tandem    one tandem::http_client, every request a coroutine, all started at once on
//                one io thread (max_connections_per_host = requests: a connection each)
//   io-threads   a std::thread per request, each a blocking connect + send + recv on a plain
//                socket of its own: the classic "thread per request"
//   io-pool      pool_threads threads, each with one keep-alive connection, taking the next
//                request from a shared counter until none is left: a blocking worker pool
//
// Every client issues the same requests (the same paths, in the same order), measures each
// one's latency from the start of the batch, and samples its own thread count
// (/proc/self/status) while the batch runs.
#include "http_server.hpp"
#include "io_section.hpp"
#include "section_util.hpp"

#include <tandem/tandem.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <limits>
#include <mutex>
#include <queue>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

namespace demo {
namespace {

using clock_type = std::chrono::steady_clock;
using namespace std::chrono_literals;

constexpr auto request_timeout = 30s;  // a request that takes longer is an error, never a hang

double ms_since(clock_type::time_point t0) {
    return std::chrono::duration<double, std::milli>(clock_type::now() - t0).count();
}

unsigned threads_now() {
    std::ifstream status("/proc/self/status");
    std::string line;
    while (std::getline(status, line)) {
        if (line.rfind("Threads:", 0) == 0)
            return static_cast<unsigned>(std::atoi(line.c_str() + 8));
    }
    return 0;
}

/// Per-request outcomes, written by whichever thread made the request (one writer per index).
class tally {
public:
    explicit tally(std::size_t n) : latency_ms_(n, std::numeric_limits<double>::quiet_NaN()) {}
    void ok(std::size_t i, double ms) { latency_ms_[i] = ms; }
    void fail(std::string what) {
        errors_.fetch_add(1, std::memory_order_relaxed);
        std::lock_guard lock(mutex_);
        if (first_error_.empty()) first_error_ = std::move(what);
    }
    /// Fills the counts and percentiles of the first `done` requests.
    io_result result(std::size_t done, double wall_ms, unsigned threads) const {
        io_result r;
        r.done = done;
        r.errors = errors_.load();
        r.wall_ms = r.measured_ms = wall_ms;
        r.threads = threads;
        r.first_error = first_error_;
        std::vector<double> ok;
        for (std::size_t i = 0; i < done; ++i)
            if (!std::isnan(latency_ms_[i])) ok.push_back(latency_ms_[i]);
        r.ok = ok.size();
        r.p50_ms = percentile(ok, 0.50);
        r.p99_ms = percentile(ok, 0.99);
        return r;
    }

    /// Nearest rank; 0 for an empty set.
    static double percentile(std::vector<double> v, double q) {
        if (v.empty()) return 0;
        std::sort(v.begin(), v.end());
        const auto rank = static_cast<std::size_t>(std::ceil(q * static_cast<double>(v.size())));
        return v[std::clamp<std::size_t>(rank, 1, v.size()) - 1];
    }

private:
    std::vector<double> latency_ms_;  // NaN: failed or not run
    std::atomic<std::uint64_t> errors_{0};
    std::mutex mutex_;
    std::string first_error_;
};

int print(const io_result& r) {
    std::fputs(r.to_text().c_str(), stdout);
    std::fflush(stdout);
    return 0;
}

// ---- io-tandem ----------------------------------------------------------------------------

tandem::task<> fetch_one(tandem::http_client* client, std::string url, std::size_t i,
                         clock_type::time_point t0, tally* out) {
    try {
        tandem::http_response r = co_await tandem::timeout(request_timeout, client->get(url));
        if (r.status == 200 && !r.body.empty())
            out->ok(i, ms_since(t0));
        else
            out->fail("HTTP status " + std::to_string(r.status) + " for " + url);
    } catch (const std::exception& e) {
        out->fail(e.what());
    }
}

/// Every request of `urls` at once on this event loop (request i is the batch's
/// (*indices)[i]); sets *wall_ms, counted from t0, then *finished.
tandem::task<> tandem_batch(tandem::http_client* client, const std::vector<std::string>* urls,
                            const std::vector<std::size_t>* indices, clock_type::time_point t0,
                            tally* out, double* wall_ms, std::atomic<bool>* finished) {
    std::vector<tandem::task<>> all;
    all.reserve(urls->size());
    for (std::size_t i = 0; i < urls->size(); ++i)
        all.push_back(fetch_one(client, (*urls)[i], (*indices)[i], t0, out));
    co_await tandem::when_all(std::move(all));
    *wall_ms = ms_since(t0);
    finished->store(true, std::memory_order_release);
}

std::vector<std::string> urls_of(const io_workload& w) {
    const std::vector<unsigned> delays = w.delays();
    std::vector<std::string> urls;
    urls.reserve(w.requests);
    for (std::size_t i = 0; i < w.requests; ++i)
        urls.push_back("http://" + w.host_port + w.path(i, delays));
    return urls;
}

// ---- blocking HTTP/1.1 on plain sockets (io-threads, io-pool) --------------------------

sockaddr_in socket_address(const std::string& host_port) {
    const std::size_t colon = host_port.rfind(':');
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<std::uint16_t>(std::atoi(host_port.c_str() + colon + 1)));
    if (colon == std::string::npos ||
        ::inet_pton(AF_INET, host_port.substr(0, colon).c_str(), &a.sin_addr) != 1)
        throw std::invalid_argument("not an IPv4 host:port: " + host_port);
    return a;
}

std::string errno_text(const char* what) {
    return std::string(what) + ": " + std::strerror(errno);
}

/// One keep-alive connection, opened on first use.
class blocking_connection {
public:
    blocking_connection() = default;
    blocking_connection(const blocking_connection&) = delete;
    blocking_connection& operator=(const blocking_connection&) = delete;
    ~blocking_connection() { close(); }

    /// Sends `request` and reads the response; "" if it was a complete 200, else what failed
    /// (the connection is then closed; the next get reconnects).
    std::string get(const sockaddr_in& to, const std::string& request) {
        if (fd_ < 0) {
            if (std::string e = connect(to); !e.empty()) return e;
        }
        std::string e = exchange(request);
        if (!e.empty()) close();
        return e;
    }
    void close() {
        if (fd_ >= 0) ::close(fd_);
        fd_ = -1;
        buf_.clear();
    }

private:
    std::string connect(const sockaddr_in& to) {
        fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd_ < 0) return errno_text("socket");
        const int one = 1;
        const timeval limit{std::chrono::seconds(request_timeout).count(), 0};
        ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof limit);
        ::setsockopt(fd_, SOL_SOCKET, SO_SNDTIMEO, &limit, sizeof limit);
        int r;
        do {
            r = ::connect(fd_, reinterpret_cast<const sockaddr*>(&to), sizeof to);
        } while (r != 0 && errno == EINTR);
        if (r == 0) return {};
        std::string e = errno_text("connect");
        close();
        return e;
    }

    /// Reads more into buf_; "" or what failed.
    std::string receive() {
        char chunk[4096];
        for (;;) {
            const ssize_t n = ::recv(fd_, chunk, sizeof chunk, 0);
            if (n > 0) {
                buf_.append(chunk, static_cast<std::size_t>(n));
                return {};
            }
            if (n == 0) return "connection closed by the server";
            if (errno != EINTR) return errno_text("recv");
        }
    }

    std::string exchange(const std::string& request) {
        for (std::size_t sent = 0; sent < request.size();) {
            const ssize_t n =
                ::send(fd_, request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) return errno_text("send");
            sent += static_cast<std::size_t>(n);
        }
        std::size_t head_end;
        while ((head_end = buf_.find("\r\n\r\n")) == std::string::npos) {
            if (std::string e = receive(); !e.empty()) return e;
        }
        const std::string_view head = std::string_view(buf_).substr(0, head_end);
        if (head.substr(0, 9) != "HTTP/1.1 " && head.substr(0, 9) != "HTTP/1.0 ")
            return "malformed response";
        const int status = std::atoi(std::string(head.substr(9, 3)).c_str());
        const std::string_view length = http_header_value(head, "Content-Length");
        if (length.empty()) return "response without Content-Length";
        const bool close_after = http_header_value(head, "Connection") == "close";
        const std::size_t total =
            head_end + 4 + std::strtoul(std::string(length).c_str(), nullptr, 10);
        while (buf_.size() < total) {
            if (std::string e = receive(); !e.empty()) return e;
        }
        buf_.erase(0, total);
        if (close_after) close();
        if (status != 200) return "HTTP status " + std::to_string(status);
        return {};
    }

    int fd_ = -1;
    std::string buf_;
};

std::vector<std::string> requests_of(const io_workload& w) {
    const std::vector<unsigned> delays = w.delays();
    std::vector<std::string> requests;
    requests.reserve(w.requests);
    for (std::size_t i = 0; i < w.requests; ++i)
        requests.push_back("GET " + w.path(i, delays) + " HTTP/1.1\r\nHost: " + w.host_port +
                           "\r\n\r\n");
    return requests;
}

/// Samples the thread count every 2 ms until `finished` returns true.
unsigned sample_until(const std::function<bool()>& finished) {
    unsigned peak = threads_now();
    while (!finished()) {
        peak = std::max(peak, threads_now());
        std::this_thread::sleep_for(2ms);
    }
    return peak;
}

// ---- io-pool's estimate of the requests it did not run ------------------------------------

/// Places requests [done, n) on the threads, each thread free at `free_at[t]` (ms since the
/// batch began), request i taking delays[i] + overhead; returns every request's completion
/// time, the measured ones included.
std::vector<double> place_the_rest(std::vector<double> completion, std::size_t done,
                                   const std::vector<unsigned>& delays, double overhead,
                                   const std::vector<double>& free_at) {
    std::priority_queue<double, std::vector<double>, std::greater<>> threads(free_at.begin(),
                                                                             free_at.end());
    for (std::size_t i = done; i < completion.size(); ++i) {
        const double start = threads.top();
        threads.pop();
        completion[i] = start + delays[i] + overhead;
        threads.push(completion[i]);
    }
    return completion;
}

}  // namespace

int io_tandem_main(const io_workload& w, unsigned loops) {
    tandem::runtime_options options = util::base_options();
    options.io_threads = std::max(loops, 1u);
    options.processes.enabled = false;  // pure I/O: no worker processes
    tandem::runtime rt(options);
    tandem::http_client_options co;
    co.max_connections_per_host = std::max<std::size_t>(w.requests, 1);
    tandem::http_client client(co);
    const std::vector<std::string> urls = urls_of(w);
    tally out(w.requests);
    // The batch runs on the loops, its requests dealt out in turn (spawn from this thread
    // picks the loops round-robin); this thread only counts threads meanwhile, as in the
    // other modes: reading /proc on a loop would charge tandem for the measurement.
    const unsigned n = options.io_threads;
    std::vector<std::vector<std::string>> parts(n);
    std::vector<std::vector<std::size_t>> indices(n);
    for (std::size_t i = 0; i < urls.size(); ++i) {
        parts[i % n].push_back(urls[i]);
        indices[i % n].push_back(i);
    }
    std::vector<double> wall(n, 0);
    std::vector<std::atomic<bool>> finished(n);
    const auto t0 = clock_type::now();
    for (unsigned l = 0; l < n; ++l)
        rt.spawn(tandem_batch(&client, &parts[l], &indices[l], t0, &out, &wall[l], &finished[l]));
    const unsigned peak = sample_until([&] {
        for (const auto& f : finished)
            if (!f.load(std::memory_order_acquire)) return false;
        return true;
    });
    return print(out.result(w.requests, *std::max_element(wall.begin(), wall.end()), peak));
}

int io_threads_main(const io_workload& w) {
    const sockaddr_in to = socket_address(w.host_port);
    const std::vector<std::string> requests = requests_of(w);
    tally out(w.requests);
    std::atomic<std::size_t> finished{0};
    std::atomic<unsigned> live{0}, most_live{0};  // exact, where sampling may miss the peak
    std::vector<std::thread> threads;
    threads.reserve(w.requests);
    const auto t0 = clock_type::now();
    for (std::size_t i = 0; i < w.requests; ++i) {
        try {
            threads.emplace_back([&, i] {
                const unsigned now = live.fetch_add(1, std::memory_order_relaxed) + 1;
                unsigned seen = most_live.load(std::memory_order_relaxed);
                while (now > seen && !most_live.compare_exchange_weak(seen, now)) {
                }
                blocking_connection c;  // its own connection, closed when it is done
                if (std::string e = c.get(to, requests[i]); e.empty())
                    out.ok(i, ms_since(t0));
                else
                    out.fail(std::move(e));
                live.fetch_sub(1, std::memory_order_relaxed);
                finished.fetch_add(1, std::memory_order_release);
            });
        } catch (const std::system_error& e) {  // the system refused another thread
            out.fail(std::string("cannot start a thread: ") + e.what());
        }
    }
    const unsigned sampled =
        sample_until([&] { return finished.load(std::memory_order_acquire) == threads.size(); });
    const unsigned peak = std::max(sampled, most_live.load() + 1);  // + this thread
    const double wall = ms_since(t0);
    for (std::thread& t : threads) t.join();
    return print(out.result(w.requests, wall, peak));
}

int io_pool_main(const io_workload& w) {
    const sockaddr_in to = socket_address(w.host_port);
    const std::vector<std::string> requests = requests_of(w);
    const std::vector<unsigned> delays = w.delays();
    const unsigned n_threads = std::max(1U, w.pool_threads);
    tally out(w.requests);
    // own_ms: from the request's start to its end; end_ms: its end, from the batch's start.
    std::vector<double> own_ms(w.requests, 0), end_ms(w.requests, 0), free_at(n_threads, 0);
    std::atomic<std::size_t> next{0};
    std::atomic<unsigned> stopped{0};
    const auto t0 = clock_type::now();
    const auto budget_end = t0 + std::chrono::milliseconds(w.budget_ms);
    std::vector<std::thread> threads;
    for (unsigned t = 0; t < n_threads; ++t) {
        threads.emplace_back([&, t] {
            blocking_connection c;
            for (;;) {
                if (w.budget_ms > 0 && clock_type::now() >= budget_end) break;
                const std::size_t i = next.fetch_add(1, std::memory_order_relaxed);
                if (i >= w.requests) break;
                const double start = ms_since(t0);
                if (std::string e = c.get(to, requests[i]); e.empty())
                    out.ok(i, ms_since(t0));
                else
                    out.fail(std::move(e));
                free_at[t] = end_ms[i] = ms_since(t0);
                own_ms[i] = end_ms[i] - start;
            }
            stopped.fetch_add(1, std::memory_order_release);
        });
    }
    const unsigned peak =
        sample_until([&] { return stopped.load(std::memory_order_acquire) == n_threads; });
    const double wall = ms_since(t0);
    for (std::thread& t : threads) t.join();
    const std::size_t done = std::min<std::size_t>(next.load(), w.requests);
    io_result r = out.result(done, wall, peak);
    if (done < w.requests && done > 0) {
        // The pool hit its time budget: place the requests it did not run.
        double overhead = 0;
        for (std::size_t i = 0; i < done; ++i) overhead += own_ms[i] - delays[i];
        r.overhead_ms = std::max(0.0, overhead / static_cast<double>(done));
        const std::vector<double> completion =
            place_the_rest(std::move(end_ms), done, delays, r.overhead_ms, free_at);
        r.estimated = true;
        r.wall_ms = *std::max_element(completion.begin(), completion.end());
        r.p50_ms = tally::percentile(completion, 0.50);
        r.p99_ms = tally::percentile(completion, 0.99);
    }
    return print(r);
}

}  // namespace demo
