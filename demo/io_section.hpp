// SPDX-License-Identifier: MIT
#pragma once

// The I/O section's parts shared by the parent (io_section.cpp: run_io) and the client children
// (io_clients.cpp): the workload, which travels to each child on its command line, and the
// children's one result line.
//
//   parent ──fork/exec──▶ tandem-demo --child io-server            (prints "PORT n")
//          ──fork/exec──▶ tandem-demo --child io-tandem  WORKLOAD  (prints "RESULT ...")
//          ──fork/exec──▶ tandem-demo --child io-tandem-loops WORKLOAD (one loop per core)
//          ──fork/exec──▶ tandem-demo --child io-threads WORKLOAD
//          ──fork/exec──▶ tandem-demo --child io-pool    WORKLOAD
//   and takes each client's CPU time and peak RSS from wait4().
//
// RESULT line (one line, key=value, numbers in decimal):
//   RESULT ok=N errors=N done=N wall_ms=X p50_ms=X p99_ms=X threads=N estimated=0|1
//          measured_ms=X overhead_ms=X
// followed, when a request failed, by "ERROR <the first failure's message>".
// `done` requests were attempted (ok + errors); fewer than the workload's `requests` only when
// the pool hit its time budget. Then `estimated=1` and wall/p50/p99 are for ALL requests,
// the ones not run placed on the pool's threads by their known delays plus the measured
// per-request overhead; `measured_ms` is how long it really ran.
// Latencies are from the moment the client began issuing the batch to the response's last
// byte: the wait a caller who asked for all N at once sees.

#include <cstdint>
#include <string>
#include <vector>

namespace demo {

/// The I/O section's concurrency when --connections is not given.
unsigned io_default_connections(bool quick);

/// File descriptors one I/O child needs beyond its connections (the ring, the pipes, ...).
constexpr unsigned io_spare_fds = 64;

struct io_workload {
    std::string host_port;   // "127.0.0.1:PORT"
    std::string fixed_path;  // non-empty: every request GETs it (nginx); else /delay/<ms>
    unsigned requests = 0;
    unsigned delay_min_ms = 0;
    unsigned delay_max_ms = 0;
    std::uint32_t seed = 1;
    unsigned pool_threads = 0;  // io-pool's threads
    unsigned budget_ms = 0;     // io-pool stops taking requests after this long; 0: never

    std::vector<std::string> to_args() const;
    /// Parses to_args()'s output; throws std::invalid_argument on anything else.
    static io_workload from_args(int argc, char** argv);

    /// Each request's delay in ms (all 0 with fixed_path): the same list for every mode.
    std::vector<unsigned> delays() const;
    /// The path request `i` GETs, given delays().
    std::string path(std::size_t i, const std::vector<unsigned>& delays) const;
};

/// What a client child printed (see the top of the file).
struct io_result {
    bool parsed = false;
    std::uint64_t ok = 0, errors = 0, done = 0, threads = 0;
    double wall_ms = 0, p50_ms = 0, p99_ms = 0, measured_ms = 0, overhead_ms = 0;
    bool estimated = false;
    std::string first_error;

    std::string to_text() const;
    static io_result parse(const std::string& text);
};

/// The client children (io_clients.cpp): each makes the workload's requests one way, prints
/// its RESULT line and returns the exit status.
int io_tandem_main(const io_workload& w, unsigned loops);  // loops: io threads
int io_threads_main(const io_workload& w);
int io_pool_main(const io_workload& w);

}  // namespace demo
