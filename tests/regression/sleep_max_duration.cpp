// SPDX-License-Identifier: MIT
// What broke: sleep_for and timeout computed steady_clock::now() + d, which
// overflows for d = nanoseconds::max() (signed overflow: undefined, in practice
// a deadline in the past), so a "sleep forever" returned at once and a
// timeout(max, ...) fired immediately. Deadlines now saturate.
#include <tandem/tandem.hpp>

#include <catch2/catch.hpp>

#include <chrono>

using namespace std::chrono_literals;

TEST_CASE("a sleep of nanoseconds::max() lasts until a timeout cuts it", "[regression]") {
    auto start = std::chrono::steady_clock::now();
    CHECK_THROWS_AS(
        tandem::run(tandem::timeout(5ms, tandem::sleep_for(std::chrono::nanoseconds::max()))),
        tandem::timed_out);
    CHECK(std::chrono::steady_clock::now() - start >= 5ms);
}

TEST_CASE("a timeout of nanoseconds::max() never fires", "[regression]") {
    // The inner 5 ms timeout must be the one that fires: timed_out either way,
    // so check the value path too.
    CHECK(tandem::run(
              tandem::timeout(std::chrono::nanoseconds::max(), [](int v) -> tandem::task<int> {
                  co_await tandem::sleep_for(5ms);
                  co_return v;
              }(7))) == 7);
}
