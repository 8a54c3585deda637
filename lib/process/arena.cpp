// SPDX-License-Identifier: MIT
#include "arena.hpp"

#include "../fault.hpp"
#include "../fd_advice.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/sysinfo.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <limits>
#include <string>
#include <system_error>
#include <utility>

namespace tandem::detail {

namespace {

[[noreturn]] void fail(int err, const char* step, std::size_t bytes) {
    throw std::system_error(err, std::system_category(),
                            std::string("shared_arena: ") + step + " (" + std::to_string(bytes) +
                                " bytes)" + fd_advice(err));
}

/// Physical memory in bytes, or SIZE_MAX when it cannot be read.
std::size_t physical_memory() {
    struct sysinfo info {};
    if (::sysinfo(&info) != 0) return std::numeric_limits<std::size_t>::max();
    const auto total = static_cast<unsigned long long>(info.totalram) * info.mem_unit;
    if (total > std::numeric_limits<std::size_t>::max())
        return std::numeric_limits<std::size_t>::max();
    return static_cast<std::size_t>(total);
}

}  // namespace

shared_arena shared_arena::create(std::size_t bytes, std::size_t populate_bytes) {
    if (bytes == 0) fail(EINVAL, "size must not be zero", bytes);
    const auto page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
    if (bytes > std::numeric_limits<std::size_t>::max() - (page - 1))
        fail(ENOMEM, "rounding up to the page size", bytes);
    const std::size_t size = (bytes + page - 1) / page * page;
    if (size > static_cast<std::size_t>(std::numeric_limits<off_t>::max()))
        fail(EFBIG, "size exceeds off_t", bytes);
    // Populating a memfd allocates every page: beyond physical memory the
    // OOM killer would answer instead of mmap, so refuse here.
    if (size > physical_memory()) fail(ENOMEM, "size exceeds physical memory", bytes);

    int fd = -1;
    if (const int injected = fault_hit(fault_point::memfd)) {
        errno = injected;
    } else {
        fd = ::memfd_create("tandem-arena", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    }
    if (fd < 0) fail(errno, "memfd_create", bytes);
    auto close_and_fail = [&](const char* step) {
        const int err = errno;
        ::close(fd);
        fail(err, step, bytes);
    };
    if (::ftruncate(fd, static_cast<off_t>(size)) != 0) close_and_fail("ftruncate");
    // Sealed sizes: no process sharing the fd can shrink the file under a
    // mapping (others would fault with SIGBUS) or grow it.
    if (::fcntl(fd, F_ADD_SEALS, F_SEAL_GROW | F_SEAL_SHRINK | F_SEAL_SEAL) != 0)
        close_and_fail("fcntl(F_ADD_SEALS)");
    void* base = MAP_FAILED;
    if (const int injected = fault_hit(fault_point::mmap)) {
        errno = injected;
    } else {
        base = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    }
    if (base == MAP_FAILED) close_and_fail("mmap");
    shared_arena arena(static_cast<std::byte*>(base), size, fd);
    arena.populate(0, populate_bytes);
    return arena;
}

void shared_arena::populate(std::size_t offset, std::size_t bytes) const noexcept {
    if (offset >= size_) return;
    bytes = std::min(bytes, size_ - offset);
    const auto page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
    const std::size_t begin = offset / page * page;
    const std::size_t end = (offset + bytes + page - 1) / page * page;
    if (end <= begin) return;
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23  // Linux 5.14; glibc 2.36's headers may lack it
#endif
    // Allocates the pages and maps them writable without touching their
    // contents, so it is safe while other processes already use the memory.
    if (::madvise(base_ + begin, end - begin, MADV_POPULATE_WRITE) == 0) return;
    // Older kernels: a read fault allocates a shmem page too (and changes nothing).
    for (std::size_t at = begin; at < end; at += page) {
        (void)*static_cast<volatile const std::byte*>(base_ + at);
    }
}

shared_arena::shared_arena(shared_arena&& other) noexcept
    : base_(std::exchange(other.base_, nullptr)),
      size_(std::exchange(other.size_, 0)),
      fd_(std::exchange(other.fd_, -1)) {}

shared_arena& shared_arena::operator=(shared_arena&& other) noexcept {
    if (this != &other) {
        release();
        base_ = std::exchange(other.base_, nullptr);
        size_ = std::exchange(other.size_, 0);
        fd_ = std::exchange(other.fd_, -1);
    }
    return *this;
}

shared_arena::~shared_arena() {
    release();
}

void shared_arena::release() noexcept {
    if (base_ != nullptr) ::munmap(base_, size_);
    if (fd_ >= 0) ::close(fd_);
    base_ = nullptr;
    size_ = 0;
    fd_ = -1;
}

}  // namespace tandem::detail
