// SPDX-License-Identifier: MIT
// What broke: file::close() took the fd out of the file before submitting its
// IORING_OP_CLOSE. A task cancelled before that submission (or a loop with no
// SQE to give, found by the fault-injection sweep in fault_test) threw
// operation_cancelled with the fd neither closed by the kernel nor by the
// file's destructor: one fd leaked per such close. It now closes the fd itself
// when the kernel never saw the close.
#include <tandem/tandem.hpp>

#include "../support.hpp"

#include <catch2/catch.hpp>

#include <unistd.h>

#include <filesystem>
#include <stop_token>
#include <string>

namespace {

tandem::task<> open_then_close(std::filesystem::path path, std::stop_source* stop) {
    tandem::file f = co_await tandem::file::open(path, tandem::open_mode::read);
    stop->request_stop();  // the close below starts cancelled
    co_await f.close();
}

}  // namespace

TEST_CASE("a file closed by a cancelled task leaks no fd", "[regression]") {
    const auto path = std::filesystem::temp_directory_path() /
                      ("tandem-close-" + std::to_string(::getpid()) + ".txt");
    tandem::run(tandem::write_file(path, "x"));
    for (const tandem::io_backend backend : usable_backends()) {
        tandem::runtime rt(tandem::runtime_options{.backend = backend});
        const std::size_t before = dir_entries("/proc/self/fd").size();
        for (int i = 0; i < 20; ++i) {
            std::stop_source stop;
            CHECK_THROWS_AS(rt.block_on(tandem::with_stop_token(stop.get_token(),
                                                                open_then_close(path, &stop))),
                            tandem::operation_cancelled);
        }
        CHECK(dir_entries("/proc/self/fd").size() == before);
    }
    std::filesystem::remove(path);
}
