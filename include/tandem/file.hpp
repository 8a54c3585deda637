// SPDX-License-Identifier: MIT
#pragma once

/// \file
/// Files through the ring: IORING_OP_OPENAT, READ, WRITE, FSYNC and CLOSE.
///
/// Every operation suspends the calling task (never the thread) and resumes it
/// on the same loop. Buffers passed in must stay alive until the awaited task
/// finishes, which the coroutine frame guarantees when you `co_await` at once.
/// Errors are `std::system_error` carrying the errno (ENOENT for a missing
/// file); cancellation gives `operation_cancelled`. Loop threads only.

#include <tandem/task.hpp>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>

namespace tandem {

/// How to open a file; combine with `|`. `read_write` is `read | write`.
/// `create` and `truncate` alone imply `write`; `append` implies `write`.
/// New files get mode 0644 (less the umask).
enum class open_mode : unsigned {
    read = 1,
    write = 2,
    read_write = 3,
    append = 4,
    create = 8,
    truncate = 16,
};

constexpr open_mode operator|(open_mode a, open_mode b) noexcept {
    return static_cast<open_mode>(static_cast<unsigned>(a) | static_cast<unsigned>(b));
}
constexpr bool has_mode(open_mode set, open_mode m) noexcept {
    return (static_cast<unsigned>(set) & static_cast<unsigned>(m)) == static_cast<unsigned>(m);
}

/// An open file. Move-only; the destructor closes a still-open descriptor
/// synchronously (close(2) on a regular file does not block on I/O).
class file {
public:
    file() noexcept = default;
    file(file&& other) noexcept;
    file& operator=(file&& other) noexcept;
    file(const file&) = delete;
    file& operator=(const file&) = delete;
    ~file();

    /// Opens `path` (relative paths against the current directory).
    static task<file> open(const std::filesystem::path& path, open_mode mode = open_mode::read);

    /// Reads up to `buffer.size()` bytes at `offset`; returns the count, 0 at
    /// end of file. A short count is not an error.
    task<std::size_t> read_at(std::span<std::byte> buffer, std::uint64_t offset);

    /// Writes all of `data` at `offset` (retrying short writes).
    task<std::size_t> write_at(std::span<const std::byte> data, std::uint64_t offset);

    /// fsync(2) through the ring.
    task<> sync();

    /// Closes through the ring; the file is closed even if this throws.
    task<> close();

    bool is_open() const noexcept { return fd_ >= 0; }
    int native_handle() const noexcept { return fd_; }

private:
    explicit file(int fd) noexcept : fd_(fd) {}
    int fd_ = -1;
};

/// Reads a whole file into a string.
task<std::string> read_file(const std::filesystem::path& path);

/// Creates or truncates `path` and writes `contents` to it.
task<> write_file(const std::filesystem::path& path, std::string_view contents);

}  // namespace tandem
