// SPDX-License-Identifier: MIT
#include <tandem/file.hpp>

#include "uring_op.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <string>
#include <utility>

namespace tandem {

namespace {

int open_flags(open_mode m) {
    bool w = has_mode(m, open_mode::write) || has_mode(m, open_mode::append) ||
             has_mode(m, open_mode::create) || has_mode(m, open_mode::truncate);
    bool r = has_mode(m, open_mode::read);
    int flags = O_CLOEXEC;
    flags |= (r && w) ? O_RDWR : (w ? O_WRONLY : O_RDONLY);
    if (has_mode(m, open_mode::append)) flags |= O_APPEND;
    if (has_mode(m, open_mode::create)) flags |= O_CREAT;
    if (has_mode(m, open_mode::truncate)) flags |= O_TRUNC;
    return flags;
}

// One read or write is capped below 2 GiB: the kernel's limit per call.
constexpr std::size_t max_io = 0x7ffff000;

}  // namespace

file::file(file&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}

file& file::operator=(file&& other) noexcept {
    if (this != &other) {
        if (fd_ >= 0) ::close(fd_);
        fd_ = std::exchange(other.fd_, -1);
    }
    return *this;
}

file::~file() {
    if (fd_ >= 0) ::close(fd_);
}

task<file> file::open(const std::filesystem::path& path, open_mode mode) {
    // The coroutine takes its own copy of the path: the caller's may be gone
    // before the kernel reads it.
    return [](std::filesystem::path p, open_mode mode) -> task<file> {
        int flags = open_flags(mode);
        int fd = co_await detail::uring_op([&](io_uring_sqe* sqe) {
            io_uring_prep_openat(sqe, AT_FDCWD, p.c_str(), flags, 0644);
        });
        if (fd < 0) {
            throw std::system_error(-fd, std::system_category(), "tandem: open " + p.string());
        }
        co_return file(fd);
    }(path, mode);
}

task<std::size_t> file::read_at(std::span<std::byte> buffer, std::uint64_t offset) {
    int fd = fd_;
    std::size_t len = std::min(buffer.size(), max_io);
    int n = co_await detail::uring_op([&](io_uring_sqe* sqe) {
        io_uring_prep_read(sqe, fd, buffer.data(), static_cast<unsigned>(len), offset);
    });
    co_return static_cast<std::size_t>(detail::check(n, "tandem: file read"));
}

task<std::size_t> file::write_at(std::span<const std::byte> data, std::uint64_t offset) {
    int fd = fd_;
    std::size_t done = 0;
    while (done < data.size()) {
        std::size_t len = std::min(data.size() - done, max_io);
        const std::byte* p = data.data() + done;
        std::uint64_t at = offset + done;
        int n = co_await detail::uring_op([&](io_uring_sqe* sqe) {
            io_uring_prep_write(sqe, fd, p, static_cast<unsigned>(len), at);
        });
        detail::check(n, "tandem: file write");
        if (n == 0) throw std::system_error(EIO, std::system_category(), "tandem: file write");
        done += static_cast<std::size_t>(n);
    }
    co_return done;
}

task<> file::sync() {
    int fd = fd_;
    int r = co_await detail::uring_op([&](io_uring_sqe* sqe) { io_uring_prep_fsync(sqe, fd, 0); });
    detail::check(r, "tandem: file sync");
}

task<> file::close() {
    const int fd = std::exchange(fd_, -1);
    if (fd < 0) co_return;
    bool submitted = false;
    int r = 0;
    try {
        r = co_await detail::uring_op([&](io_uring_sqe* sqe) {
            io_uring_prep_close(sqe, fd);
            submitted = true;
        });
    } catch (...) {
        // Cancelled before submission, or no SQE could be had: the kernel never saw this
        // close, so it happens here (a CLOSE it did see runs at once and cannot be cancelled).
        if (!submitted) ::close(fd);
        throw;
    }
    detail::check(r, "tandem: file close");
}

task<std::string> read_file(const std::filesystem::path& path) {
    return [](std::filesystem::path p) -> task<std::string> {
        file f = co_await file::open(p, open_mode::read);
        struct stat st {};
        // fstat on an open descriptor does not block; it sizes the first read.
        std::size_t chunk = 64 * 1024;
        if (::fstat(f.native_handle(), &st) == 0 && st.st_size > 0) {
            chunk = static_cast<std::size_t>(st.st_size) + 1;  // +1 sees EOF in one read
        }
        std::string out;
        std::uint64_t offset = 0;
        for (;;) {
            if (out.size() - offset < 1) out.resize(offset + chunk);
            auto* base = reinterpret_cast<std::byte*>(out.data()) + offset;
            std::size_t n = co_await f.read_at({base, out.size() - offset}, offset);
            if (n == 0) break;
            offset += n;
            chunk = std::max<std::size_t>(chunk, 64 * 1024);
        }
        out.resize(offset);
        co_await f.close();
        co_return out;
    }(path);
}

task<> write_file(const std::filesystem::path& path, std::string_view contents) {
    return [](std::filesystem::path p, std::string data) -> task<> {
        file f = co_await file::open(p, open_mode::write | open_mode::create | open_mode::truncate);
        co_await f.write_at(std::as_bytes(std::span(data.data(), data.size())), 0);
        co_await f.close();
    }(path, std::string(contents));
}

}  // namespace tandem
