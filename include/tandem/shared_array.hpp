// SPDX-License-Identifier: MIT
#pragma once

/// \file
/// `shared_array<T>`: an array in the process pool's shared arena, passed to a worker by handle
/// (its address and length), never copied. The worker reads and writes the same memory; its
/// writes are visible to the parent once the job has completed.

#include <tandem/codec.hpp>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <span>
#include <type_traits>
#include <utility>

namespace tandem {

namespace detail {

class process_pool_impl;

/// One allocation in the arena's heap, owned by the parent (reference counted).
struct shared_block {
    std::atomic<std::size_t> refs{1};
    process_pool_impl* pool = nullptr;
    std::byte* data = nullptr;
    std::size_t bytes = 0;
};

/// Allocates `bytes` (zero-filled) in the current runtime's arena; throws payload_too_large when
/// the heap has no room, std::logic_error off an io thread or in a worker.
shared_block* shared_allocate(std::size_t bytes);
/// Drops one reference; the last one frees the block.
void shared_release(shared_block* block) noexcept;
struct shared_ref {
    shared_block* block = nullptr;  // null in a worker: a worker never owns arena memory
    std::byte* data = nullptr;
};
/// Turns a decoded (address, bytes) back into an array: in the parent only a live block's
/// address is accepted (it gains a reference); in a worker, any range inside the heap. Anything
/// else throws decode_error.
shared_ref shared_resolve(std::uint64_t address, std::uint64_t bytes, std::size_t align);

}  // namespace detail

/// A fixed-size array of trivially copyable T in the shared arena.
///
/// - Ownership: copies share the same memory (reference counted, thread-safe counts); the last
///   copy in the parent frees it. Every shared_array must be destroyed before its runtime
///   (the arena goes with the runtime; a survivor aborts the runtime's destructor with a
///   message). In a worker, a shared_array received as an argument is a view that owns nothing.
/// - Data races: the parent and a worker see the same bytes. Writes made by a job are visible
///   to the parent when the job's co_await returns; touching the array from the parent while a
///   job works on it is a data race, as between threads.
/// - Allocation (`allocate`): in the parent, from a task on an io thread of a runtime whose pool
///   is enabled; zero-filled; throws payload_too_large when the arena's heap has no room.
template <class T>
class shared_array {
    static_assert(std::is_trivially_copyable_v<T> && !std::is_pointer_v<T>,
                  "shared_array<T>: T must be trivially copyable and not a pointer (the memory is "
                  "read by other processes)");

public:
    shared_array() noexcept = default;

    static shared_array allocate(std::size_t n) {
        if (n > SIZE_MAX / sizeof(T)) {
            throw payload_too_large("tandem: shared_array::allocate: size overflows");
        }
        detail::shared_block* b = detail::shared_allocate(n * sizeof(T));
        return shared_array(b, reinterpret_cast<T*>(b->data), n);
    }

    shared_array(const shared_array& o) noexcept
        : block_(o.block_), data_(o.data_), size_(o.size_) {
        if (block_ != nullptr) block_->refs.fetch_add(1, std::memory_order_relaxed);
    }
    shared_array(shared_array&& o) noexcept
        : block_(std::exchange(o.block_, nullptr)),
          data_(std::exchange(o.data_, nullptr)),
          size_(std::exchange(o.size_, 0)) {}
    shared_array& operator=(shared_array o) noexcept {
        std::swap(block_, o.block_);
        std::swap(data_, o.data_);
        std::swap(size_, o.size_);
        return *this;
    }
    ~shared_array() {
        if (block_ != nullptr) detail::shared_release(block_);
    }

    T* data() const noexcept { return data_; }
    std::size_t size() const noexcept { return size_; }
    bool empty() const noexcept { return size_ == 0; }
    std::span<T> span() const noexcept { return {data_, size_}; }
    T& operator[](std::size_t i) const noexcept { return data_[i]; }
    T* begin() const noexcept { return data_; }
    T* end() const noexcept { return data_ + size_; }

private:
    template <class, class>
    friend struct codec;
    shared_array(detail::shared_block* b, T* data, std::size_t n) noexcept
        : block_(b), data_(data), size_(n) {}

    detail::shared_block* block_ = nullptr;
    T* data_ = nullptr;
    std::size_t size_ = 0;
};

/// A shared_array travels as its address and length: the arena is mapped at the same address
/// in every process.
template <class T>
struct codec<shared_array<T>> {
    static constexpr std::size_t min_wire_size = 2 * sizeof(std::uint64_t);
    static void encode(encoder& e, const shared_array<T>& a) {
        const std::uint64_t words[2] = {reinterpret_cast<std::uintptr_t>(a.data()),
                                        static_cast<std::uint64_t>(a.size())};
        e.write(words, sizeof words);
    }
    static shared_array<T> decode(decoder& d) {
        std::uint64_t words[2];
        d.read(words, sizeof words);
        if (words[0] == 0 && words[1] == 0) return {};
        if (words[1] > SIZE_MAX / sizeof(T)) detail::throw_decode_error("shared_array length");
        detail::shared_ref r = detail::shared_resolve(words[0], words[1] * sizeof(T), alignof(T));
        return shared_array<T>(r.block, reinterpret_cast<T*>(r.data),
                               static_cast<std::size_t>(words[1]));
    }
};

}  // namespace tandem
