// SPDX-License-Identifier: MIT
#pragma once

// The process pool's shared arena: one anonymous memory file (memfd), mapped
// MAP_SHARED before the zygote is forked, so the zygote and every worker see it
// at the same address and a pointer into it means the same bytes everywhere.
//
// memfd rather than shm_open: the memory has no name in /dev/shm, so nothing is
// left behind when every process holding it dies, however it dies.

#include <cstddef>
#include <cstdint>

namespace tandem::detail {

/// A sealed MAP_SHARED mapping of a memfd, pre-faulted on request.
///
/// The size is rounded up to the page size and sealed (F_SEAL_GROW,
/// F_SEAL_SHRINK, then F_SEAL_SEAL): a process that shares the fd cannot
/// truncate the file under the mapping and make another process fault with
/// SIGBUS. populate() allocates pages ahead of use (MADV_POPULATE_WRITE), so
/// the first touch on a hot path costs no page allocation; a size larger than
/// the machine's physical memory is refused instead of waking the OOM killer.
///
/// Move-only. The destructor unmaps and closes the fd; children forked earlier
/// keep their own mapping. Not thread-safe: one owner (populate() excepted,
/// which may run on another thread while the memory is in use).
class shared_arena {
public:
    /// Creates an arena of at least `bytes` bytes (rounded up to the page size)
    /// and populates its first `populate_bytes` (all of it by default).
    /// Throws std::system_error (system_category) naming the failed step and the
    /// size: EINVAL for 0, ENOMEM for a size beyond physical memory or address
    /// space, or the errno of memfd_create / ftruncate / fcntl / mmap.
    static shared_arena create(std::size_t bytes, std::size_t populate_bytes = SIZE_MAX);

    /// Allocates and maps the pages of [offset, offset + bytes) (clamped to the
    /// arena) without changing their contents. Never fails: on error the pages
    /// are simply faulted in later, on first touch.
    void populate(std::size_t offset, std::size_t bytes) const noexcept;

    /// An empty arena (no mapping), to be assigned one made by create().
    shared_arena() noexcept = default;

    shared_arena(shared_arena&& other) noexcept;
    shared_arena& operator=(shared_arena&& other) noexcept;
    shared_arena(const shared_arena&) = delete;
    shared_arena& operator=(const shared_arena&) = delete;
    ~shared_arena();

    /// The first byte; page aligned. Null only in a moved-from arena.
    std::byte* base() const noexcept { return base_; }
    /// The mapped size in bytes (a multiple of the page size).
    std::size_t size() const noexcept { return size_; }
    /// The memfd (O_CLOEXEC); -1 in a moved-from arena. Owned by the arena.
    int fd() const noexcept { return fd_; }

private:
    shared_arena(std::byte* base, std::size_t size, int fd) noexcept
        : base_(base), size_(size), fd_(fd) {}
    void release() noexcept;

    std::byte* base_ = nullptr;
    std::size_t size_ = 0;
    int fd_ = -1;
};

}  // namespace tandem::detail
