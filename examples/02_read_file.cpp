// SPDX-License-Identifier: MIT
// 02_read_file: files through io_uring. Writes a temporary file with write_file, reads it back
// whole with read_file, then again in 64 KiB chunks with file::open and read_at, counting its
// lines. Given a path, it reads that file the same two ways. A missing file is a
// std::system_error carrying ENOENT.
// Run: build/examples/02_read_file [path]
#include <tandem/tandem.hpp>

#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <string>
#include <system_error>
#include <vector>

struct file_summary {
    std::uint64_t bytes = 0;
    std::uint64_t lines = 0;
};

// Reads `path` chunk by chunk: memory stays at one buffer however large the file is.
tandem::task<file_summary> count_lines(std::filesystem::path path) {
    tandem::file f = co_await tandem::file::open(path);
    std::vector<std::byte> buffer(64 * 1024);
    file_summary s;
    for (;;) {
        const std::size_t n = co_await f.read_at(buffer, s.bytes);
        if (n == 0) break;  // end of file
        s.lines += static_cast<std::uint64_t>(std::count(
            buffer.begin(), buffer.begin() + static_cast<std::ptrdiff_t>(n), std::byte{'\n'}));
        s.bytes += n;
    }
    co_await f.close();
    co_return s;
}

// Reads `path` whole and in chunks; true if both ways saw the same bytes.
tandem::task<bool> read_both_ways(std::filesystem::path path) {
    const std::string whole = co_await tandem::read_file(path);
    const file_summary s = co_await count_lines(path);
    std::printf("%s: read_file got %zu bytes; read_at in chunks got %llu bytes, %llu lines\n",
                path.c_str(), whole.size(), static_cast<unsigned long long>(s.bytes),
                static_cast<unsigned long long>(s.lines));
    const auto lines = static_cast<std::uint64_t>(std::count(whole.begin(), whole.end(), '\n'));
    const bool same = s.bytes == whole.size() && s.lines == lines;
    co_return same;
}

tandem::task<bool> demo(std::vector<std::filesystem::path> given) {
    // A file we know the contents of: 10,000 numbered lines.
    std::string text;
    for (int i = 0; i < 10'000; ++i) text += "line " + std::to_string(i) + "\n";
    const auto temp = std::filesystem::temp_directory_path() /
                      ("tandem_02_read_file." + std::to_string(::getpid()));
    co_await tandem::write_file(temp, text);
    const std::string back = co_await tandem::read_file(temp);
    const file_summary s = co_await count_lines(temp);
    std::filesystem::remove(temp);
    bool ok = back == text && s.bytes == text.size() && s.lines == 10'000;
    std::printf("wrote %zu bytes to %s and read them back: %s\n", text.size(), temp.c_str(),
                ok ? "the same bytes, 10000 lines" : "DIFFERENT");

    for (const auto& path : given) {
        const bool same = co_await read_both_ways(path);
        ok = ok && same;
    }

    try {
        (void)co_await tandem::read_file("/no/such/file");
        ok = false;
    } catch (const std::system_error& e) {
        std::printf("a missing file: std::system_error, %s\n", e.what());
        ok = ok && e.code() == std::errc::no_such_file_or_directory;
    }
    co_return ok;
}

int main(int argc, char** argv) {
    try {
        const bool ok =
            tandem::run(demo(std::vector<std::filesystem::path>(argv + 1, argv + argc)));
        std::printf("%s\n", ok ? "ok" : "FAILED");
        return ok ? 0 : 1;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "error: %s\n", e.what());
        return 1;
    }
}
