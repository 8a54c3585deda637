// SPDX-License-Identifier: MIT
#pragma once

/// \file
/// The peers `offload_to_process` is measured against in bench/offload_bench.cpp. Nothing here
/// depends on tandem, so the floor and the baselines stay put while tandem changes.
///
/// Common rules: one thread drives each object (none is thread-safe); every call blocks until
/// its jobs are complete; failing to make a process, pipe or mapping throws std::system_error;
/// a peer process dying while a call waits for it aborts with a message (a benchmark must not
/// hang). Payload buffers are private to each object and grow on the first call for a size:
/// call once before timing.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <vector>

#include <sys/types.h>

namespace offload_peers {

struct raw_ring_options {
    /// How long a waiting side polls its ring before sleeping on the futex; 0 sleeps at once,
    /// so every hand-off pays for waking a sleeping (v)CPU.
    std::chrono::nanoseconds spin = std::chrono::microseconds(50);
    /// The largest payload(); two areas of this size are mapped (untouched pages cost nothing).
    std::size_t max_payload = std::size_t{64} << 20;
};

/// The design floor: a parent and one forked child sharing a memfd mapping that holds a job ring
/// and a completion ring (SPSC, fixed-size entries). A waiting side spins, then sleeps on a
/// cross-process futex; a producer calls futex_wake only if the consumer announced sleep.
/// The destructor kills (SIGKILL) and reaps the child; if the parent dies, the child sees its
/// death pipe hang up within 100 ms and exits.
class raw_ring {
public:
    static constexpr std::size_t capacity = 1024;  ///< entries per ring

    explicit raw_ring(raw_ring_options options = {});
    ~raw_ring();
    raw_ring(const raw_ring&) = delete;
    raw_ring& operator=(const raw_ring&) = delete;

    /// One empty job there and back.
    void round_trip();
    /// `n_jobs` empty jobs, up to `depth` (1..capacity) in flight.
    void pipelined(std::size_t n_jobs, std::size_t depth);
    /// `bytes` (<= max_payload) there and back in four copies: parent into the shared area,
    /// child into its own buffer and back into the shared result area, parent out of it.
    void payload(std::size_t bytes);
    /// The last payload(bytes) came back intact.
    bool payload_ok(std::size_t bytes) const;

private:
    struct shared;
    void wait_for_completion();

    shared* shm_ = nullptr;
    std::size_t map_bytes_ = 0;
    std::byte* in_ = nullptr;   // shared: a payload job's argument
    std::byte* out_ = nullptr;  // shared: its result
    pid_t child_ = -1;
    int death_fd_ = -1;  // the child's death pipe, write end
    std::chrono::nanoseconds spin_;
    std::size_t max_payload_;
    std::uint64_t next_id_ = 1;
    std::vector<std::byte> src_, dst_;
};

/// A simple, fair prefork pool: `workers` (>= 1) processes, each with a request and a reply
/// pipe. A job is a 16-byte header plus payload; the worker echoes the payload. Headers are
/// batched per write and replies flushed when the worker's input runs dry, as a good pool
/// would do. The destructor closes the pipes (workers read end of file and exit) and reaps
/// them; workers exit the same way when the parent dies.
class pipe_pool {
public:
    explicit pipe_pool(unsigned workers);
    ~pipe_pool();
    pipe_pool(const pipe_pool&) = delete;
    pipe_pool& operator=(const pipe_pool&) = delete;

    /// One empty job to the next worker (round-robin) and its reply.
    void round_trip();
    /// `n_jobs` empty jobs round-robin over the workers, up to `depth` in flight (split evenly),
    /// replies awaited with poll().
    void pipelined(std::size_t n_jobs, std::size_t depth);
    /// `bytes` to a worker and back through both pipes.
    void payload(std::size_t bytes);
    bool payload_ok(std::size_t bytes) const;

private:
    struct worker;
    void start_worker();
    void shut_down() noexcept;

    std::vector<worker> workers_;
    std::size_t next_ = 0;
    std::uint32_t next_id_ = 1;
    std::vector<std::byte> src_, dst_;
};

/// One empty job on a new thread (std::launch::async), waited for.
void async_round_trip();
/// `n_jobs` empty std::async jobs, up to `depth` futures in flight, oldest waited for first.
void async_pipelined(std::size_t n_jobs, std::size_t depth);

/// Two pre-faulted buffers of `bytes`; copy() memcpy's one into the other: the ceiling for a
/// path that copies a payload once.
class memcpy_peer {
public:
    explicit memcpy_peer(std::size_t bytes);
    void copy();
    bool ok() const;

private:
    std::vector<std::byte> src_, dst_;
};

/// How many primes lie in [lo, hi), by trial division by 2 and odd numbers up to the square
/// root: deterministic, CPU-bound, no memory traffic. The job to offload.
long count_primes(long lo, long hi);
/// The sequential reference: [lo, hi) cut into `chunk`-sized pieces as a parallel run would cut
/// it, counted one after the other on this thread.
long count_primes_reference(long lo, long hi, long chunk);

}  // namespace offload_peers
