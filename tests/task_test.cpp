// SPDX-License-Identifier: MIT
// task<T>: laziness, values, exceptions, move-only ownership, deep chains.
#include <tandem/tandem.hpp>

#include <catch2/catch.hpp>

#include <memory>
#include <stdexcept>
#include <string>
#include <type_traits>

static_assert(!std::is_copy_constructible_v<tandem::task<int>>, "task is move-only");
static_assert(std::is_nothrow_move_constructible_v<tandem::task<int>>);
static_assert(std::is_same_v<tandem::task<>, tandem::task<void>>);

namespace {

tandem::task<int> answer(int* started) {
    ++*started;
    co_return 42;
}

tandem::task<std::string> throws_after_await() {
    co_await tandem::yield();
    throw std::runtime_error("boom from a task");
}

tandem::task<int> depth(int n) {
    if (n == 0) co_return 0;
    co_return 1 + co_await depth(n - 1);
}

tandem::task<std::unique_ptr<int>> move_only_result() {
    co_return std::make_unique<int>(7);
}

}  // namespace

TEST_CASE("task does not run until it is awaited", "[task]") {
    int started = 0;
    auto t = answer(&started);
    CHECK(started == 0);
    int v = tandem::run(std::move(t));
    CHECK(started == 1);
    CHECK(v == 42);
}

TEST_CASE("task destroyed without being awaited never runs", "[task]") {
    int started = 0;
    { auto t = answer(&started); }
    CHECK(started == 0);
}

TEST_CASE("task rethrows the coroutine's exception at co_await", "[task]") {
    CHECK_THROWS_WITH(tandem::run(throws_after_await()), "boom from a task");
}

// Sanitizer instrumentation stops g++ from turning symmetric transfer into a
// tail call, so there each level does take stack: keep the chain short there.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr int chain_depth = 500;
#else
constexpr int chain_depth = 100'000;
#endif

TEST_CASE("task chains a hundred thousand deep without overflowing the stack", "[task]") {
    // symmetric transfer: each level resumes the next without growing the stack
    CHECK(tandem::run(depth(chain_depth)) == chain_depth);
}

TEST_CASE("task carries move-only results", "[task]") {
    auto p = tandem::run(move_only_result());
    REQUIRE(p);
    CHECK(*p == 7);
}

TEST_CASE("task move leaves the source empty", "[task]") {
    int started = 0;
    auto a = answer(&started);
    auto b = std::move(a);
    CHECK_FALSE(a.valid());
    CHECK(b.valid());
    CHECK(tandem::run(std::move(b)) == 42);
}
