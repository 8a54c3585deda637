// SPDX-License-Identifier: MIT
//
// The entry points of the process pool: offload_job's steps (called by
// offload_to_process in process.hpp), shared_array's allocation and handles,
// and the statistics.

#include "futex.hpp"
#include "pool_internal.hpp"
#include "worker.hpp"

#include <sys/syscall.h>
#include <unistd.h>

#include <poll.h>
#include <signal.h>

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <string>
#include <system_error>
#include <vector>

namespace tandem::detail {

// ---- shared arrays and statistics -------------------------------------------------------------

shared_block* process_pool_impl::allocate_shared(std::size_t bytes) {
    std::size_t off = no_block;
    const std::size_t rounded = shm::align_up(bytes == 0 ? 1 : bytes, arena_heap::granule);
    {
        std::lock_guard lock(mutex_);
        if (bytes <= SIZE_MAX / 2) off = heap_.allocate(rounded);
        if (off == no_block) {
            throw payload_too_large("tandem: shared_array::allocate: no free block of " +
                                    size_text(bytes) + " in the arena (" +
                                    size_text(heap_.free_bytes()) + " free of " +
                                    size_text(heap_.capacity()) + ")");
        }
    }
    auto* block = new shared_block;
    block->pool = this;
    block->data = view_.base + off;
    block->bytes = rounded;
    std::memset(block->data, 0, rounded);
    std::lock_guard lock(mutex_);
    shared_.emplace(reinterpret_cast<std::uintptr_t>(block->data), block);
    return block;
}

void process_pool_impl::free_shared(shared_block* block) noexcept {
    {
        std::lock_guard lock(mutex_);
        shared_.erase(reinterpret_cast<std::uintptr_t>(block->data));
        heap_.free(static_cast<std::size_t>(block->data - view_.base), block->bytes);
        satisfy_waiters();
    }
    delete block;
}

shared_ref process_pool_impl::resolve_shared(std::uint64_t address, std::uint64_t bytes,
                                             std::size_t align) {
    std::lock_guard lock(mutex_);
    auto it = shared_.find(static_cast<std::uintptr_t>(address));
    if (it == shared_.end() || bytes > it->second->bytes || address % align != 0) {
        throw_decode_error("a shared_array handle that names no live array of this pool");
    }
    it->second->refs.fetch_add(1, std::memory_order_relaxed);
    return {it->second, it->second->data};
}

process_pool_stats process_pool_impl::stats() const {
    std::lock_guard lock(mutex_);
    process_pool_stats s = stats_;
    s.workers_alive = 0;
    for (const auto& rec : workers_) {
        if (rec->pidfd >= 0) ++s.workers_alive;
    }
    return s;
}

// ---- offload_job and shared_array entry points ----------------------------------------------

offload_job::offload_job(job_trampoline t, const void* fn, std::size_t fn_size)
    : trampoline(t), callable(fn), callable_size(fn_size) {
    pool = &current_pool("offload_to_process");
    owner = this_thread_loop();
    on_cancel = [](cancel_hook* h) noexcept {
        auto* job = static_cast<offload_job*>(h);
        job->pool->cancel(*job);
    };
}

offload_job::~offload_job() {
    unlink();
    release();
}

void offload_job::release() noexcept {
    if (slot != UINT32_MAX || state == phase::waiting) pool->abandon(*this);
}

bool offload_job::reserve_awaiter::await_ready() {
    return job->pool->try_reserve(*job);
}

bool offload_job::suspend(std::coroutine_handle<> h, stop_node* node) {
    handle = h;
    if (node != nullptr && !node->link(this)) {
        end = outcome::cancelled;
        return false;
    }
    pool->wait_for_room(*this);
    return true;
}

bool offload_job::dispatch(std::coroutine_handle<> h, stop_node* node) {
    handle = h;
    if (node != nullptr && !node->link(this)) {
        end = outcome::cancelled;
        return false;
    }
    if (!pool->send(*this)) {
        unlink();
        return false;
    }
    return true;
}

void offload_job::resume_or_throw() {
    unlink();
    const outcome o = end;
    end = outcome::none;
    switch (o) {
        case outcome::none:
        case outcome::value:
            return;
        case outcome::remote_error:
            throw remote_error(message);
        case outcome::crashed:
            throw worker_crashed(message);
        case outcome::cancelled:
            throw operation_cancelled();
        case outcome::too_large:
            throw payload_too_large(message);
    }
}

shared_block* shared_allocate(std::size_t bytes) {
    if (in_worker()) {
        throw std::logic_error(
            "tandem: shared_array::allocate called in a worker; allocate in the parent");
    }
    return current_pool("shared_array::allocate").allocate_shared(bytes);
}

void shared_release(shared_block* block) noexcept {
    if (block->refs.fetch_sub(1, std::memory_order_acq_rel) == 1) block->pool->free_shared(block);
}

shared_ref shared_resolve(std::uint64_t address, std::uint64_t bytes, std::size_t align) {
    if (in_worker()) return worker_resolve(address, bytes, align);
    return current_pool("decoding a shared_array").resolve_shared(address, bytes, align);
}

}  // namespace tandem::detail
