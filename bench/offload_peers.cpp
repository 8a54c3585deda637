// SPDX-License-Identifier: MIT
// The peers of bench/offload_bench.cpp; see offload_peers.hpp. raw_ring's path:
//
//   parent                        memfd, MAP_SHARED                  child
//   src_ --memcpy--> in area  ------------------------------->  memcpy --> private copy
//   push --------->  jobs ring [tail|head|sleeping|slots]  -->  pop, run
//   pop  <---------  done ring [tail|head|sleeping|slots]  <--  push
//   dst_ <--memcpy-- out area <-------------------------------  memcpy <-- private copy
//
// Each ring has one producer and one consumer; the consumer's `sleeping` word is also the
// futex it sleeps on.

#include "offload_peers.hpp"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <future>
#include <initializer_list>
#include <new>
#include <system_error>

#include <fcntl.h>
#include <linux/futex.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

namespace offload_peers {
namespace {

[[noreturn]] void die(const char* what) {
    std::fprintf(stderr, "offload_peers: %s\n", what);
    std::abort();
}

[[noreturn]] void throw_errno(const char* what, int e = errno) {
    throw std::system_error(e, std::system_category(), what);
}

void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    asm volatile("yield");
#endif
}

/// In a fresh child: closes every fd from 3 up but `keep`, so no child holds a copy of another
/// worker's pipe end (which would hide the end of file that tells that worker to exit).
void close_other_fds(std::initializer_list<int> keep) {
    std::vector<unsigned> k(keep.begin(), keep.end());
    std::sort(k.begin(), k.end());
    unsigned from = 3;
    for (unsigned fd : k) {
        if (fd > from) close_range(from, fd - 1, 0);
        from = fd + 1;
    }
    close_range(from, ~0U, 0);
}

void write_all(int fd, const void* data, std::size_t n) {
    for (auto* p = static_cast<const std::byte*>(data); n > 0;) {
        ssize_t w = ::write(fd, p, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) throw_errno("write");
        p += w;
        n -= static_cast<std::size_t>(w);
    }
}

void fill_pattern(std::vector<std::byte>& v) {
    for (std::size_t i = 0; i < v.size(); ++i) v[i] = static_cast<std::byte>(i * 131 + 7);
}

// ---- raw_ring ---------------------------------------------------------------------------------

struct job_entry {
    std::uint64_t id;
    std::uint64_t bytes;  // 0: an empty job
};

// futex() takes a plain 32-bit word, which std::atomic<uint32_t> is; lock-free atomics are
// address-free, so they work between processes.
static_assert(sizeof(std::atomic<std::uint32_t>) == 4);
static_assert(std::atomic<std::uint32_t>::is_always_lock_free);

struct spsc_ring {
    // Each side's index on its own cache line, beside its private copy of the other side's
    // index, which it refreshes only when the copy says full (producer) or empty (consumer):
    // the two processes do not bounce a line per entry. Indices wrap; slot = index % capacity.
    alignas(64) std::atomic<std::uint32_t> tail{0};  // producer's
    std::uint32_t head_cache = 0;
    alignas(64) std::atomic<std::uint32_t> head{0};  // consumer's
    std::uint32_t tail_cache = 0;
    alignas(64) std::atomic<std::uint32_t> sleeping{0};  // consumer's "I sleep" flag and futex
    alignas(64) job_entry slots[raw_ring::capacity];

    bool push(const job_entry& e) {
        std::uint32_t t = tail.load(std::memory_order_relaxed);
        // acquire: the consumer has finished reading a slot before we overwrite it.
        if (t - head_cache == raw_ring::capacity &&
            t - (head_cache = head.load(std::memory_order_acquire)) == raw_ring::capacity)
            return false;
        slots[t % raw_ring::capacity] = e;
        tail.store(t + 1, std::memory_order_release);  // publishes the slot's contents
        return true;
    }
    bool empty() {  // consumer side; acquire pairs with push's release
        std::uint32_t h = head.load(std::memory_order_relaxed);
        return h == tail_cache && (tail_cache = tail.load(std::memory_order_acquire)) == h;
    }
    bool pop(job_entry* e) {
        if (empty()) return false;
        std::uint32_t h = head.load(std::memory_order_relaxed);
        *e = slots[h % raw_ring::capacity];
        head.store(h + 1, std::memory_order_release);  // our read is done before reuse
        return true;
    }

    // FUTEX_WAIT/WAKE, not the _PRIVATE forms: a private futex is keyed by address space, so
    // each process would use its own. The shared form keys on the memfd page both map.
    long futex(int op, std::uint32_t val, const timespec* timeout) {
        return syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&sleeping), op, val, timeout,
                       nullptr, 0);
    }

    /// Producer, after pushing: wakes the consumer only if it announced sleep. The seq_cst
    /// fence pairs with wait()'s (Dekker): either we see sleeping == 1, or the consumer's
    /// re-check after announcing sees our entry. No wake-up is lost.
    void wake() {
        std::atomic_thread_fence(std::memory_order_seq_cst);
        if (sleeping.load(std::memory_order_relaxed) != 0 &&
            sleeping.exchange(0, std::memory_order_relaxed) != 0)
            futex(FUTEX_WAKE, 1, nullptr);
    }

    /// Consumer: returns once the ring holds an entry. It spins first because waking a
    /// sleeping CPU costs tens of microseconds (more on a VM) and the answer is often nearer.
    /// `on_timeout` runs after each 100 ms asleep, to check that the peer still lives.
    template <class F>
    void wait(std::chrono::nanoseconds spin, F on_timeout) {
        const auto deadline = std::chrono::steady_clock::now() + spin;
        while (spin.count() > 0 && std::chrono::steady_clock::now() < deadline)
            for (int i = 0; i < 16; ++i, cpu_relax())
                if (!empty()) return;
        const timespec ts{0, 100'000'000};
        while (empty()) {
            sleeping.store(1, std::memory_order_relaxed);
            std::atomic_thread_fence(std::memory_order_seq_cst);
            // FUTEX_WAIT returns at once (EAGAIN) if the producer already cleared the flag.
            long rc = empty() ? futex(FUTEX_WAIT, 1, &ts) : 0;
            int err = errno;
            sleeping.store(0, std::memory_order_relaxed);
            if (rc != 0 && err == ETIMEDOUT && empty()) on_timeout();
        }
    }
};

[[noreturn]] void child_main(spsc_ring& jobs, spsc_ring& done, std::byte* in, std::byte* out,
                             int death_fd, std::chrono::nanoseconds spin) {
    auto parent_gone = [death_fd] {  // the parent held the write end: it hangs up with it
        pollfd p{death_fd, POLLIN, 0};
        if (poll(&p, 1, 0) != 0) _exit(0);
    };
    std::vector<std::byte> priv;  // the child's own copy, as a job that decodes would hold
    for (job_entry e;;) {
        jobs.wait(spin, parent_gone);
        while (jobs.pop(&e)) {
            if (e.bytes != 0) {
                if (priv.size() < e.bytes) priv.resize(e.bytes);
                std::memcpy(priv.data(), in, e.bytes);
                std::memcpy(out, priv.data(), e.bytes);
            }
            // Never full: the parent keeps at most `capacity` jobs in flight altogether.
            if (!done.push(e)) die("raw_ring: completion ring overflow");
        }
        done.wake();  // once per drained batch: the fence is cheap, the futex call rare
    }
}

}  // namespace

struct raw_ring::shared {
    spsc_ring jobs;  // parent -> child
    spsc_ring done;  // child -> parent
};

raw_ring::raw_ring(raw_ring_options options)
    : spin_(options.spin), max_payload_(options.max_payload) {
    auto pages = [](std::size_t n) { return (n + 4095) / 4096 * 4096; };
    map_bytes_ = pages(sizeof(shared)) + 2 * pages(max_payload_);
    int mfd = memfd_create("offload_peers.raw_ring", MFD_CLOEXEC);
    if (mfd < 0) throw_errno("memfd_create");
    void* p = ftruncate(mfd, static_cast<off_t>(map_bytes_)) == 0
                  ? mmap(nullptr, map_bytes_, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0)
                  : MAP_FAILED;
    int e = errno;
    close(mfd);  // the mapping keeps the memory, and fork hands the mapping on
    if (p == MAP_FAILED) throw_errno("ftruncate/mmap", e);
    shm_ = new (p) shared;
    in_ = static_cast<std::byte*>(p) + pages(sizeof(shared));
    out_ = in_ + pages(max_payload_);

    int death[2] = {-1, -1};
    if (pipe2(death, O_CLOEXEC) != 0 || (child_ = fork()) < 0) {
        e = errno;
        if (death[0] >= 0) close(death[0]), close(death[1]);
        munmap(p, map_bytes_);
        throw_errno("pipe2/fork", e);
    }
    if (child_ == 0) {
        close_other_fds({death[0]});
        child_main(shm_->jobs, shm_->done, in_, out_, death[0], spin_);
    }
    close(death[0]);
    death_fd_ = death[1];
}

raw_ring::~raw_ring() {
    kill(child_, SIGKILL);
    while (waitpid(child_, nullptr, 0) < 0 && errno == EINTR) {
    }
    close(death_fd_);
    munmap(shm_, map_bytes_);
}

void raw_ring::wait_for_completion() {
    shm_->done.wait(spin_, [this] {
        if (waitpid(child_, nullptr, WNOHANG) == child_) die("raw_ring: the child died");
    });
}

void raw_ring::round_trip() {
    pipelined(1, 1);
}

void raw_ring::pipelined(std::size_t n_jobs, std::size_t depth) {
    if (depth == 0 || depth > capacity) die("raw_ring::pipelined: depth must be 1..capacity");
    std::uint64_t expect = next_id_;
    for (std::size_t submitted = 0, completed = 0; completed < n_jobs;) {
        const std::size_t before = submitted;
        for (; submitted < n_jobs && submitted - completed < depth; ++submitted)
            if (!shm_->jobs.push({next_id_++, 0})) die("raw_ring: job ring full");
        if (submitted != before) shm_->jobs.wake();  // one check per batch, not per job
        wait_for_completion();
        // One child and FIFO rings: completions come back in order.
        for (job_entry e; shm_->done.pop(&e); ++completed)
            if (e.id != expect++) die("raw_ring: completion out of order");
    }
}

void raw_ring::payload(std::size_t bytes) {
    if (bytes > max_payload_) die("raw_ring::payload: larger than max_payload");
    if (src_.size() < bytes) src_.resize(bytes), dst_.resize(bytes), fill_pattern(src_);
    std::memcpy(in_, src_.data(), bytes);
    if (!shm_->jobs.push({next_id_++, bytes})) die("raw_ring: job ring full");
    shm_->jobs.wake();
    wait_for_completion();
    job_entry e;
    if (!shm_->done.pop(&e) || e.bytes != bytes) die("raw_ring: wrong completion");
    std::memcpy(dst_.data(), out_, bytes);
}

bool raw_ring::payload_ok(std::size_t bytes) const {
    return dst_.size() >= bytes && std::memcmp(src_.data(), dst_.data(), bytes) == 0;
}

// ---- pipe_pool --------------------------------------------------------------------------------

namespace {

struct pipe_header {
    std::uint32_t id;
    std::uint32_t pad;
    std::uint64_t bytes;
};

/// Buffered reads: many small headers per read(); large payloads go straight to their buffer.
struct fd_reader {
    int fd = -1;
    std::vector<std::byte> buf = std::vector<std::byte>(16384);
    std::size_t pos = 0, end = 0;

    std::size_t buffered() const { return end - pos; }
    bool fill() {  // one read(); false at end of file or on an error
        if (pos == end) pos = end = 0;
        if (end == buf.size()) {
            std::memmove(buf.data(), buf.data() + pos, end - pos);
            end -= pos;
            pos = 0;
        }
        ssize_t n;
        do n = ::read(fd, buf.data() + end, buf.size() - end);
        while (n < 0 && errno == EINTR);
        end += n > 0 ? static_cast<std::size_t>(n) : 0;
        return n > 0;
    }
    bool read_exact(void* data, std::size_t n) {
        for (auto* p = static_cast<std::byte*>(data); n > 0;) {
            std::size_t got = std::min(n, buffered());
            std::memcpy(p, buf.data() + pos, got);
            pos += got;
            if (got == 0 && n >= buf.size()) {
                ssize_t r = ::read(fd, p, n);
                if (r < 0 && errno == EINTR) continue;
                if (r <= 0) return false;
                got = static_cast<std::size_t>(r);
            } else if (got == 0 && !fill()) {
                return false;
            }
            p += got;
            n -= got;
        }
        return true;
    }
};

[[noreturn]] void pipe_worker_main(int req_fd, int rep_fd) try {
    fd_reader in{req_fd};
    std::vector<pipe_header> replies;
    std::vector<std::byte> payload;
    for (pipe_header h;;) {
        if (!in.read_exact(&h, sizeof h)) _exit(0);  // end of file: the parent is gone
        if (payload.size() < h.bytes) payload.resize(h.bytes);
        if (!in.read_exact(payload.data(), h.bytes)) _exit(0);
        replies.push_back(h);
        // Flush before anything that may block: a payload, or a read() with no whole
        // header left in the buffer.
        if (h.bytes != 0 || in.buffered() < sizeof h) {
            write_all(rep_fd, replies.data(), replies.size() * sizeof(pipe_header));
            replies.clear();
        }
        write_all(rep_fd, payload.data(), h.bytes);
    }
} catch (...) {
    _exit(1);
}

}  // namespace

struct pipe_pool::worker {
    pid_t pid = -1;
    int req_fd = -1;  // the parent writes jobs here
    fd_reader rep;    // and reads replies here
    std::size_t in_flight = 0;
};

pipe_pool::pipe_pool(unsigned workers) {
    if (workers == 0) die("pipe_pool: needs a worker");
    workers_.reserve(workers);
    try {
        for (unsigned i = 0; i < workers; ++i) start_worker();
    } catch (...) {
        shut_down();  // no destructor runs for a constructor that throws
        throw;
    }
}

void pipe_pool::start_worker() {
    int req[2], rep[2];
    if (pipe2(req, O_CLOEXEC) != 0) throw_errno("pipe2");
    if (pipe2(rep, O_CLOEXEC) != 0) {
        int e = errno;
        close(req[0]);
        close(req[1]);
        throw_errno("pipe2", e);
    }
    // 1 MiB (the unprivileged maximum) instead of 64 KiB: fewer sleeps per megabyte.
    fcntl(req[1], F_SETPIPE_SZ, 1 << 20);
    fcntl(rep[1], F_SETPIPE_SZ, 1 << 20);
    pid_t pid = fork();
    int e = errno;
    if (pid == 0) close_other_fds({req[0], rep[1]}), pipe_worker_main(req[0], rep[1]);
    close(req[0]);
    close(rep[1]);
    workers_.push_back(worker{pid, req[1], fd_reader{rep[0]}, 0});  // shut_down() closes it
    if (pid < 0) throw_errno("fork", e);
}

pipe_pool::~pipe_pool() {
    shut_down();
}

void pipe_pool::shut_down() noexcept {
    for (worker& w : workers_) close(w.req_fd), close(w.rep.fd);  // workers read end of file
    for (worker& w : workers_)
        while (w.pid > 0 && waitpid(w.pid, nullptr, 0) < 0 && errno == EINTR) {
        }
}

void pipe_pool::round_trip() {
    worker& w = workers_[next_++ % workers_.size()];
    pipe_header h{next_id_++, 0, 0};
    write_all(w.req_fd, &h, sizeof h);
    if (!w.rep.read_exact(&h, sizeof h) || h.id != next_id_ - 1) die("pipe_pool: bad reply");
}

void pipe_pool::pipelined(std::size_t n_jobs, std::size_t depth) {
    // At most 1024 headers (16 KiB) outstanding per worker, well inside a pipe: neither side
    // can block on a full pipe while the other waits for it.
    const std::size_t per_worker = std::clamp<std::size_t>(depth / workers_.size(), 1, 1024);
    std::vector<pipe_header> batch(per_worker);
    std::vector<pollfd> fds;
    for (const worker& w : workers_) fds.push_back({w.rep.fd, POLLIN, 0});
    for (std::size_t submitted = 0, completed = 0; completed < n_jobs;) {
        for (std::size_t k = 0; k < workers_.size(); ++k) {
            worker& w = workers_[next_++ % workers_.size()];
            std::size_t n = std::min(per_worker - w.in_flight, n_jobs - submitted);
            for (std::size_t j = 0; j < n; ++j) batch[j] = {next_id_++, 0, 0};
            write_all(w.req_fd, batch.data(), n * sizeof(pipe_header));
            w.in_flight += n;
            submitted += n;
        }
        if (poll(fds.data(), fds.size(), -1) < 0 && errno != EINTR) throw_errno("poll");
        for (std::size_t i = 0; i < fds.size(); ++i) {
            worker& w = workers_[i];
            if (fds[i].revents == 0) continue;
            if (!w.rep.fill()) die("pipe_pool: a worker died");
            for (pipe_header h; w.rep.buffered() >= sizeof h; --w.in_flight, ++completed)
                w.rep.read_exact(&h, sizeof h);
        }
    }
}

void pipe_pool::payload(std::size_t bytes) {
    if (src_.size() < bytes) src_.resize(bytes), dst_.resize(bytes), fill_pattern(src_);
    worker& w = workers_[next_++ % workers_.size()];
    // Header and payload in one writev, the rest (beyond the pipe's size) as it drains. The
    // worker reads the whole payload before replying, so this cannot deadlock.
    pipe_header h{next_id_++, 0, bytes};
    iovec iov[2] = {{&h, sizeof h}, {src_.data(), bytes}};
    ssize_t r = writev(w.req_fd, iov, 2);
    auto sent = static_cast<std::size_t>(std::max<ssize_t>(r, 0));
    if (sent < sizeof h)
        write_all(w.req_fd, reinterpret_cast<std::byte*>(&h) + sent, sizeof h - sent);
    sent = std::max(sent, sizeof h) - sizeof h;
    write_all(w.req_fd, src_.data() + sent, bytes - sent);
    if (!w.rep.read_exact(&h, sizeof h) || h.bytes != bytes) die("pipe_pool: bad reply");
    if (!w.rep.read_exact(dst_.data(), bytes)) die("pipe_pool: short reply");
}

bool pipe_pool::payload_ok(std::size_t bytes) const {
    return dst_.size() >= bytes && std::memcmp(src_.data(), dst_.data(), bytes) == 0;
}

// ---- std::async, memcpy, primes ---------------------------------------------------------------

void async_round_trip() {
    std::async(std::launch::async, [] {}).get();
}

void async_pipelined(std::size_t n_jobs, std::size_t depth) {
    std::deque<std::future<void>> in_flight;
    for (std::size_t i = 0; i < n_jobs; ++i) {
        if (in_flight.size() >= depth) in_flight.front().get(), in_flight.pop_front();
        in_flight.push_back(std::async(std::launch::async, [] {}));
    }
    for (auto& f : in_flight) f.get();
}

// The vectors' value-initialisation writes every page; the pattern makes ok() meaningful.
memcpy_peer::memcpy_peer(std::size_t bytes) : src_(bytes), dst_(bytes) {
    fill_pattern(src_);
}

void memcpy_peer::copy() {
    std::memcpy(dst_.data(), src_.data(), src_.size());
}

bool memcpy_peer::ok() const {
    return src_ == dst_;
}

long count_primes(long lo, long hi) {
    long count = 0;
    for (long n = std::max(lo, 2L); n < hi; ++n) {
        bool prime = n == 2 || n % 2 != 0;
        for (long d = 3; prime && d * d <= n; d += 2) prime = n % d != 0;
        count += prime;
    }
    return count;
}

long count_primes_reference(long lo, long hi, long chunk) {
    if (chunk <= 0) die("count_primes_reference: chunk must be positive");
    long total = 0;
    for (long a = lo; a < hi; a += chunk) total += count_primes(a, std::min(a + chunk, hi));
    return total;
}

}  // namespace offload_peers
