// SPDX-License-Identifier: MIT
// file: whole-file helpers, positioned reads and writes, open modes, errors,
// ownership, and many readers of one file on one or two io threads.
//
// Catch's assertions are not thread-safe: coroutines on the io threads return
// what they saw and the test thread checks it.
#include <tandem/tandem.hpp>

#include <catch2/catch.hpp>

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <latch>
#include <mutex>
#include <random>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <type_traits>
#include <vector>

static_assert(!std::is_copy_constructible_v<tandem::file>, "file is move-only");
static_assert(std::is_nothrow_move_constructible_v<tandem::file>);
static_assert(std::is_nothrow_move_assignable_v<tandem::file>);

namespace fs = std::filesystem;

namespace {

/// A fresh directory under /tmp, removed with everything in it at scope exit.
struct temp_dir {
    fs::path path;
    temp_dir() {
        char name[] = "/tmp/tandem_file_test.XXXXXX";
        REQUIRE(::mkdtemp(name) != nullptr);
        path = name;
    }
    ~temp_dir() {
        std::error_code ec;
        fs::remove_all(path, ec);
    }
    temp_dir(const temp_dir&) = delete;
    temp_dir& operator=(const temp_dir&) = delete;
    fs::path operator/(const char* name) const { return path / name; }
};

std::string random_bytes(std::size_t n, std::uint64_t seed) {
    std::mt19937_64 gen(seed);
    std::string out(n, '\0');
    for (std::size_t i = 0; i < n; i += 8) {
        std::uint64_t v = gen();
        for (std::size_t j = 0; j < 8 && i + j < n; ++j) {
            out[i + j] = static_cast<char>(static_cast<unsigned char>(v >> (8 * j)));
        }
    }
    return out;
}

std::span<const std::byte> bytes_of(const std::string& s) {
    return std::as_bytes(std::span(s.data(), s.size()));
}

std::span<std::byte> writable_bytes_of(std::string& s) {
    return std::as_writable_bytes(std::span(s.data(), s.size()));
}

tandem::task<std::string> round_trip(fs::path p, std::string data) {
    co_await tandem::write_file(p, data);
    co_return co_await tandem::read_file(p);
}

}  // namespace

TEST_CASE("write_file then read_file round-trips several MiB byte for byte", "[file]") {
    temp_dir dir;
    const std::string data = random_bytes((5u << 20) + 123, 20240601);
    std::string back = tandem::run(round_trip(dir / "big.bin", data));
    REQUIRE(back.size() == data.size());
    CHECK(back == data);
    CHECK(fs::file_size(dir / "big.bin") == data.size());
}

TEST_CASE("read_file of an empty file gives an empty string", "[file]") {
    temp_dir dir;
    CHECK(tandem::run(round_trip(dir / "empty", std::string())).empty());
}

namespace {

struct positioned_result {
    std::size_t wrote_head = 0, wrote_tail = 0, read = 0;
    std::string contents;
    bool open_before_close = false, open_after_close = true;
};

tandem::task<positioned_result> positioned_io(fs::path p) {
    positioned_result r;
    tandem::file f =
        co_await tandem::file::open(p, tandem::open_mode::read_write | tandem::open_mode::create);
    const std::string head = "hello";
    const std::string tail = "world";
    r.wrote_tail = co_await f.write_at(bytes_of(tail), 100);  // leaves a hole
    r.wrote_head = co_await f.write_at(bytes_of(head), 0);
    co_await f.sync();
    r.contents.assign(200, 'x');
    r.read = co_await f.read_at(writable_bytes_of(r.contents), 0);
    r.contents.resize(r.read);
    r.open_before_close = f.is_open();
    co_await f.close();
    r.open_after_close = f.is_open();
    co_return r;
}

}  // namespace

TEST_CASE("file writes at offsets, reads them back, syncs and closes", "[file]") {
    temp_dir dir;
    positioned_result r = tandem::run(positioned_io(dir / "positioned"));
    CHECK(r.wrote_head == 5);
    CHECK(r.wrote_tail == 5);
    CHECK(r.read == 105);  // a short count: the file ends at 105
    std::string expected(105, '\0');
    expected.replace(0, 5, "hello");
    expected.replace(100, 5, "world");
    CHECK(r.contents == expected);
    CHECK(r.open_before_close);
    CHECK_FALSE(r.open_after_close);
    CHECK(fs::file_size(dir / "positioned") == 105);
}

namespace {

tandem::task<std::vector<std::size_t>> reads_at_and_past_end(fs::path p) {
    tandem::file f = co_await tandem::file::open(p);
    std::string buf(64, '\0');
    std::vector<std::size_t> counts;
    counts.push_back(co_await f.read_at(writable_bytes_of(buf), 0));
    counts.push_back(co_await f.read_at(writable_bytes_of(buf), 10));  // exactly at the end
    counts.push_back(co_await f.read_at(writable_bytes_of(buf), 1'000'000));
    co_await f.close();
    co_return counts;
}

}  // namespace

TEST_CASE("read_at at or past the end of a file returns 0", "[file]") {
    temp_dir dir;
    tandem::run(tandem::write_file(dir / "ten", "0123456789"));
    std::vector<std::size_t> counts = tandem::run(reads_at_and_past_end(dir / "ten"));
    CHECK(counts == std::vector<std::size_t>{10, 0, 0});
}

namespace {

tandem::task<> open_only(fs::path p, tandem::open_mode mode) {
    tandem::file f = co_await tandem::file::open(p, mode);
    co_await f.close();
}

}  // namespace

TEST_CASE("opening a missing file throws system_error with ENOENT and the path", "[file]") {
    temp_dir dir;
    fs::path missing = dir / "no_such_file";
    try {
        tandem::run(open_only(missing, tandem::open_mode::read));
        FAIL("open of a missing file did not throw");
    } catch (const std::system_error& e) {
        CHECK(e.code().value() == ENOENT);
        CHECK(e.code().category() == std::system_category());
        CHECK(std::string(e.what()).find(missing.string()) != std::string::npos);
    }
    // write without create does not create it either
    try {
        tandem::run(open_only(missing, tandem::open_mode::write));
        FAIL("open for writing of a missing file without create did not throw");
    } catch (const std::system_error& e) {
        CHECK(e.code().value() == ENOENT);
    }
    CHECK_FALSE(fs::exists(missing));
}

namespace {

tandem::task<> write_through_mode(fs::path p, tandem::open_mode mode, std::string data,
                                  std::uint64_t offset) {
    tandem::file f = co_await tandem::file::open(p, mode);
    if (!data.empty()) co_await f.write_at(bytes_of(data), offset);
    co_await f.close();
}

tandem::task<std::size_t> read_from_write_only(fs::path p) {
    tandem::file f = co_await tandem::file::open(p, tandem::open_mode::write);
    std::string buf(8, '\0');
    co_return co_await f.read_at(writable_bytes_of(buf), 0);
}

}  // namespace

TEST_CASE("open_mode append writes at the end whatever the offset", "[file]") {
    temp_dir dir;
    fs::path p = dir / "log";
    tandem::run(tandem::write_file(p, "abc"));
    tandem::run(write_through_mode(p, tandem::open_mode::append, "def", 0));
    tandem::run(write_through_mode(p, tandem::open_mode::append, "ghi", 1));
    CHECK(tandem::run(tandem::read_file(p)) == "abcdefghi");
}

TEST_CASE("open_mode truncate empties the file; write alone overwrites in place", "[file]") {
    temp_dir dir;
    fs::path p = dir / "t";
    tandem::run(tandem::write_file(p, "abcdef"));
    tandem::run(write_through_mode(p, tandem::open_mode::write, "XY", 2));
    CHECK(tandem::run(tandem::read_file(p)) == "abXYef");
    tandem::run(
        write_through_mode(p, tandem::open_mode::write | tandem::open_mode::truncate, "", 0));
    CHECK(fs::file_size(p) == 0);
    tandem::run(write_through_mode(p, tandem::open_mode::truncate, "new", 0));
    CHECK(tandem::run(tandem::read_file(p)) == "new");
}

TEST_CASE("open_mode create creates a missing file and keeps an existing one", "[file]") {
    temp_dir dir;
    fs::path p = dir / "created";
    tandem::run(write_through_mode(p, tandem::open_mode::create, "", 0));
    REQUIRE(fs::exists(p));
    CHECK(fs::file_size(p) == 0);
    tandem::run(tandem::write_file(p, "keep me"));
    tandem::run(write_through_mode(p, tandem::open_mode::create | tandem::open_mode::read, "", 0));
    CHECK(tandem::run(tandem::read_file(p)) == "keep me");
}

TEST_CASE("reading a file opened write-only fails with EBADF", "[file]") {
    temp_dir dir;
    fs::path p = dir / "wo";
    tandem::run(tandem::write_file(p, "secret"));
    try {
        (void)tandem::run(read_from_write_only(p));
        FAIL("read on a write-only file did not throw");
    } catch (const std::system_error& e) {
        CHECK(e.code().value() == EBADF);
    }
}

namespace {

struct move_result {
    bool source_open_after_move = true;
    int source_fd_after_move = 0;
    bool target_open = false;
    int old_target_fd = -1;
    bool old_target_fd_closed = false;  // by move assignment
    bool assigned_source_open = true;
    bool final_open = false;
};

tandem::task<move_result> moves(fs::path a_path, fs::path b_path) {
    move_result r;
    tandem::file a = co_await tandem::file::open(a_path);
    tandem::file b(std::move(a));
    r.source_open_after_move = a.is_open();  // NOLINT(bugprone-use-after-move): checked on purpose
    r.source_fd_after_move = a.native_handle();
    r.target_open = b.is_open();

    tandem::file c = co_await tandem::file::open(b_path);
    r.old_target_fd = c.native_handle();
    c = std::move(b);  // closes c's descriptor
    r.old_target_fd_closed = ::fcntl(r.old_target_fd, F_GETFD) == -1 && errno == EBADF;
    r.assigned_source_open = b.is_open();  // NOLINT(bugprone-use-after-move)
    r.final_open = c.is_open();
    co_await c.close();
    co_await a.close();  // closing a moved-from file is a no-op
    co_return r;
}

}  // namespace

TEST_CASE("a moved-from file is empty and move assignment closes the old descriptor", "[file]") {
    temp_dir dir;
    tandem::run(tandem::write_file(dir / "a", "a"));
    tandem::run(tandem::write_file(dir / "b", "b"));
    move_result r = tandem::run(moves(dir / "a", dir / "b"));
    CHECK_FALSE(r.source_open_after_move);
    CHECK(r.source_fd_after_move == -1);
    CHECK(r.target_open);
    CHECK(r.old_target_fd >= 0);
    CHECK(r.old_target_fd_closed);
    CHECK_FALSE(r.assigned_source_open);
    CHECK(r.final_open);
    tandem::file never_opened;
    CHECK_FALSE(never_opened.is_open());
}

namespace {

constexpr std::size_t chunk = 10'000;
constexpr int readers = 100;

/// Reads its chunk of a shared file; 1 if it matches `expected`, else 0.
tandem::task<int> read_chunk(tandem::file* f, const std::string* expected, std::size_t index) {
    std::string buf(chunk, '\0');
    std::uint64_t offset = index * chunk;
    std::size_t n = co_await f->read_at(writable_bytes_of(buf), offset);
    co_return n == chunk&& buf == expected->substr(offset, chunk) ? 1 : 0;
}

tandem::task<int> many_readers(fs::path p, const std::string* expected) {
    tandem::file f = co_await tandem::file::open(p);
    std::vector<tandem::task<int>> reads;
    for (int i = 0; i < readers; ++i) {
        reads.push_back(read_chunk(&f, expected, static_cast<std::size_t>(readers - 1 - i)));
    }
    std::vector<int> ok = co_await tandem::when_all(std::move(reads));
    co_await f.close();
    int good = 0;
    for (int v : ok) good += v;
    co_return good;
}

}  // namespace

TEST_CASE("one file read concurrently by 100 tasks gives each its own bytes", "[file]") {
    temp_dir dir;
    const std::string data = random_bytes(chunk * readers, 7);
    tandem::run(tandem::write_file(dir / "shared", data));
    CHECK(tandem::run(many_readers(dir / "shared", &data)) == readers);
}

namespace {

struct per_thread_files {
    std::mutex mutex;
    std::set<std::thread::id> threads;
    std::atomic<int> good{0};
    std::atomic<int> failed{0};
    std::latch done;
    explicit per_thread_files(std::ptrdiff_t n) : done(n) {}
};

tandem::task<> own_file(fs::path p, std::string data, per_thread_files* out) {
    try {
        std::string back = co_await round_trip(p, data);
        tandem::file f = co_await tandem::file::open(p);
        std::string tail(4, '\0');
        std::size_t n = co_await f.read_at(writable_bytes_of(tail), data.size() - 4);
        co_await f.close();
        if (back == data && n == 4 && tail == data.substr(data.size() - 4)) {
            out->good.fetch_add(1);
        } else {
            out->failed.fetch_add(1);
        }
    } catch (...) {
        out->failed.fetch_add(1);
    }
    {
        std::lock_guard lock(out->mutex);
        out->threads.insert(std::this_thread::get_id());
    }
    out->done.count_down();
}

}  // namespace

TEST_CASE("files work on both io threads at once", "[file]") {
    constexpr int tasks = 8;
    temp_dir dir;
    per_thread_files out(tasks);
    tandem::runtime rt(tandem::runtime_options{.io_threads = 2});
    for (int i = 0; i < tasks; ++i) {
        fs::path name = dir.path / "f";
        name += std::to_string(i);
        rt.spawn(own_file(name, random_bytes(300'000 + 17 * i, 100 + i), &out));
    }
    out.done.wait();
    CHECK(out.good.load() == tasks);
    CHECK(out.failed.load() == 0);
    CHECK(out.threads.size() == 2);
    CHECK(out.threads.count(std::this_thread::get_id()) == 0);
}
