// SPDX-License-Identifier: MIT
#include "worker.hpp"

#include "futex.hpp"
#include "shm_layout.hpp"
#include "zygote.hpp"

#include <cxxabi.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <memory>
#include <stdexcept>

namespace tandem::detail {

namespace {

constexpr long sleep_slice_ns = 200'000'000;  // how often a sleeping worker checks its parent
constexpr int worker_nice_increment = 3;

/// What a worker needs from the header, copied once at start: another
/// worker scribbling over the header later cannot steer this one.
struct worker_context {
    shm::view v;
    shm::arena_header* header = nullptr;  // for loop_state only
    std::uint32_t loops = 0, slots = 0, max_jobs = 0;
    std::uint64_t spin_ns = 0, heap_bytes = 0;
    int loop_fds[shm::max_loops] = {};
    std::uint64_t done_tails[shm::max_loops] = {};  // next position in each done ring
    std::uint32_t index = 0;
    std::uint32_t jobs_seen = 0;
    shm::worker_area* area = nullptr;
    shm::ring* submit = nullptr;
    std::uintptr_t heap_begin = 0, heap_end = 0;
};

/// The job a worker is running, behind worker_job::context_.
struct job_context {
    shm::job_slot* slot;
    std::uint32_t index;
    std::uint32_t loop;
    std::byte* out;
    std::size_t out_cap;
};

worker_context* this_worker = nullptr;  // set only in a worker process

/// Waits until ready() holds: spins for the pool's spin budget (a job that
/// follows closely is picked up in well under a microsecond), then sleeps on
/// the worker's futex after announcing it; the parent wakes it only then.
template <class Ready>
void wait_until(worker_context& w, Ready ready) {
    const std::uint64_t start = now_ns();
    for (std::uint32_t i = 0;; ++i) {
        if (ready()) return;
        if ((i & 63) == 63 && now_ns() - start > w.spin_ns) break;
        cpu_relax();
    }
    for (;;) {
        const std::uint32_t seen = w.area->futex.load(std::memory_order_acquire);
        w.area->sleeping.store(1, std::memory_order_relaxed);
        // Pairs with the parent's fence between publishing work and reading
        // `sleeping`: either we see its work now, or it sees us asleep.
        store_load_barrier();
        if (ready()) {
            w.area->sleeping.store(0, std::memory_order_relaxed);
            return;
        }
        futex_wait(&w.area->futex, seen, sleep_slice_ns);
        w.area->sleeping.store(0, std::memory_order_relaxed);
        if (ready()) return;
        if (w.area->futex.load(std::memory_order_relaxed) == seen &&
            !zygote::parent_alive(parent_died_fd()))
            ::_exit(0);
    }
}

/// Publishes slot `index` on loop `loop`'s done ring and wakes the loop if it
/// announced that it sleeps.
void complete(worker_context& w, std::uint32_t loop, std::uint32_t index) noexcept {
    if (loop >= w.loops) return;  // the parent never sends one
    w.v.done_ring(w.index, loop)->publish(w.done_tails[loop]++, index);
    store_load_barrier();  // see loop: waiting then re-check
    auto& waiting = w.header->loop_state[loop].waiting;
    if (waiting.load(std::memory_order_relaxed) != 0 &&
        waiting.exchange(0, std::memory_order_acq_rel) != 0) {
        const std::uint64_t one = 1;
        while (::write(w.loop_fds[loop], &one, sizeof one) < 0 && errno == EINTR) {
        }
    }
}

void serve(worker_context& w, std::uint32_t index) {
    if (index >= w.slots) return;
    shm::job_slot* s = w.v.slot(index);
    const shm::job_slot_cold* c = w.v.cold(index);
    auto expected = shm::slot_state::queued;
    if (!s->state.compare_exchange_strong(expected, shm::slot_state::started,
                                          std::memory_order_acq_rel, std::memory_order_acquire)) {
        if (expected == shm::slot_state::cancelled) {
            s->state.store(shm::slot_state::skipped, std::memory_order_release);
            complete(w, c->loop, index);
        }
        return;
    }
    job_context jc{s, index, c->loop, w.v.base + c->out_off, c->out_cap};
    worker_job job;
    job.args_ = w.v.base + c->args_off;
    job.args_size_ = s->args_len;
    job.callable_ = c->callable;
    job.context_ = &jc;
    // Run times steer the parent's spinning; one job in 16 is enough to
    // follow them, and spares the others two clock reads (~7% of a short job).
    const bool timed = (++w.jobs_seen & 15) == 1;
    const std::uint64_t start = timed ? now_ns() : 0;
    c->trampoline(job);
    s->run_ns = timed ? now_ns() - start : shm::not_timed;
    s->state.store(shm::slot_state::done, std::memory_order_release);
    complete(w, jc.loop, index);
}

void copy_text(char* dst, std::size_t cap, const std::string& text) noexcept {
    const std::size_t n = std::min(cap - 1, text.size());
    std::memcpy(dst, text.data(), n);
    dst[n] = '\0';
}

}  // namespace

std::string describe_current_exception() {
    std::string type = "an exception of unknown type";
    if (const std::type_info* t = abi::__cxa_current_exception_type()) {
        int status = 0;
        std::unique_ptr<char, void (*)(void*)> name(
            abi::__cxa_demangle(t->name(), nullptr, nullptr, &status), &std::free);
        type = status == 0 && name ? name.get() : t->name();
    }
    try {
        throw;
    } catch (const std::exception& e) {
        return type + ": " + e.what();
    } catch (...) {
        return type + " (not derived from std::exception)";
    }
}

void worker_main(void* arena, int index) {
    auto* header = static_cast<shm::arena_header*>(arena);
    if (header->magic_word != shm::magic || index < 0 ||
        static_cast<std::uint32_t>(index) >= header->workers)
        ::_exit(72);
    worker_context w;
    w.header = header;
    w.v = {reinterpret_cast<std::byte*>(arena), header->workers_off, header->worker_stride,
           header->slots_off};
    w.loops = std::min(header->loops, shm::max_loops);
    w.slots = header->slots;
    w.max_jobs = header->max_jobs_per_worker;
    w.spin_ns = header->spin_ns;
    w.heap_bytes = header->heap_bytes;
    std::memcpy(w.loop_fds, header->loop_fds, sizeof w.loop_fds);
    w.index = static_cast<std::uint32_t>(index);
    w.area = w.v.worker(w.index);
    w.submit = w.v.submit_ring(w.index);
    w.heap_begin = reinterpret_cast<std::uintptr_t>(w.v.base + header->heap_off);
    w.heap_end = w.heap_begin + header->heap_bytes;
    this_worker = &w;
    // A little below the parent: when jobs fill every core, the io threads
    // still get one the moment they wake. At equal priority a 1 ms timer on
    // the loop ran up to 4 ms late on this 2-core machine; at +3, under 1 ms
    // (README, "CPU offload").
    (void)::nice(worker_nice_increment);  // best effort: a failure changes nothing else

    if (void (*init)() = header->initializer; init != nullptr) {
        try {
            init();
        } catch (...) {
            copy_text(w.area->init_error, sizeof w.area->init_error,
                      "the initializer threw " + describe_current_exception());
            ::_exit(init_failed_status);
        }
    }
    w.area->ready.store(1, std::memory_order_release);

    std::uint64_t head = 0;
    std::uint32_t served = 0;
    for (;;) {
        const std::int64_t next = w.submit->peek(head);
        if (next < 0) {
            wait_until(w, [&] { return w.submit->peek(head) >= 0; });
            continue;
        }
        ++head;
        serve(w, static_cast<std::uint32_t>(next));
        if (w.max_jobs != 0 && ++served >= w.max_jobs) return;
    }
}

bool in_worker() noexcept {
    return this_worker != nullptr;
}

std::byte* worker_arena() noexcept {
    return this_worker != nullptr ? this_worker->v.base : nullptr;
}

shared_ref worker_resolve(std::uint64_t address, std::uint64_t bytes, std::size_t align) {
    const worker_context& w = *this_worker;
    if (address < w.heap_begin || address > w.heap_end || bytes > w.heap_end - address ||
        address % align != 0)
        throw_decode_error("a shared_array outside the arena");
    return {nullptr, reinterpret_cast<std::byte*>(static_cast<std::uintptr_t>(address))};
}

// ---- worker_job (called by run_in_worker in the job's own process) -----------------------

std::byte* worker_job::result_space(std::size_t n) {
    auto* jc = static_cast<job_context*>(context_);
    if (n <= jc->out_cap) return jc->out;
    // Too large for the job's own region: ask the parent for a block and wait.
    worker_context& w = *this_worker;
    shm::job_slot* s = jc->slot;
    s->out_len = n;
    s->state.store(shm::slot_state::need_space, std::memory_order_release);
    complete(w, jc->loop, jc->index);
    shm::slot_state answer{};
    wait_until(w, [&] {
        answer = s->state.load(std::memory_order_acquire);
        return answer == shm::slot_state::space_granted || answer == shm::slot_state::space_denied;
    });
    s->state.store(shm::slot_state::started, std::memory_order_relaxed);
    if (answer == shm::slot_state::space_denied) {
        throw payload_too_large("tandem: payload too large: the result needs " + std::to_string(n) +
                                " bytes; the arena's heap holds " + std::to_string(w.heap_bytes));
    }
    const shm::job_slot_cold* c = w.v.cold(jc->index);
    jc->out = w.v.base + c->out_off;
    jc->out_cap = c->out_cap;
    return jc->out;
}

void worker_job::result_written(std::size_t n) noexcept {
    auto* jc = static_cast<job_context*>(context_);
    jc->slot->out_len = n;
    jc->slot->kind = shm::result_kind::value;
}

void worker_job::fail_with_current_exception() noexcept {
    auto* jc = static_cast<job_context*>(context_);
    shm::result_kind kind = shm::result_kind::exception;
    std::string text;
    try {
        try {
            throw;
        } catch (const payload_too_large& e) {
            kind = shm::result_kind::too_large;
            text = e.what();
        } catch (...) {
            text = describe_current_exception();
        }
    } catch (...) {
        text = "an exception (describing it failed)";
    }
    const std::size_t n = std::min(jc->out_cap, text.size());
    std::memcpy(jc->out, text.data(), n);
    jc->slot->out_len = n;
    jc->slot->kind = kind;
}

}  // namespace tandem::detail
