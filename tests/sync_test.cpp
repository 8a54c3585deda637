// SPDX-License-Identifier: MIT
// mutex, event, semaphore, condition_variable and latch (sync.hpp): mutual exclusion across
// suspension points, FIFO hand-over, wake-ups across io threads and from plain threads,
// cancellation that loses no lock, permit or wake-up, on one and on two io threads.
//
// Assertions run on the test's own thread (Catch2 is not thread-safe): the tasks record what
// they saw and the test checks it after joining them. The random tests print their seed on
// failure; TANDEM_TEST_SEED=<n> replays one.
#include <tandem/tandem.hpp>

#include "support.hpp"
#include "sync_support.hpp"

#include <catch2/catch.hpp>

#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <exception>
#include <latch>
#include <memory>
#include <mutex>
#include <numeric>
#include <optional>
#include <random>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

using namespace std::chrono_literals;

static_assert(!std::is_copy_constructible_v<tandem::mutex>);
static_assert(!std::is_move_constructible_v<tandem::semaphore>);
static_assert(std::is_nothrow_move_constructible_v<tandem::mutex::scoped_lock>);
static_assert(!std::is_copy_constructible_v<tandem::mutex::scoped_lock>);
static_assert(std::is_same_v<decltype(std::declval<tandem::mutex&>().scoped()),
                             tandem::task<tandem::mutex::scoped_lock>>);

using namespace sync_support;

// ---- mutual exclusion across suspension points --------------------------------------

namespace {

enum class guard_kind { lock_unlock, scoped, semaphore };
enum class pause_kind { yield, sleep_zero };

struct exclusion_state {
    tandem::mutex m;
    tandem::semaphore one{1};
    long counter = 0;  // plain: the primitive under test is all that guards it (TSan watches)
    std::atomic<int> inside{0};
    std::atomic<int> max_inside{0};
};

tandem::task<> pause(pause_kind p) {
    if (p == pause_kind::yield) {
        co_await tandem::yield();
    } else {
        co_await tandem::sleep_for(0ns);
    }
}

/// A read-modify-write of the counter with a suspension between the read and the write.
tandem::task<> increment_across_pause(exclusion_state* s, pause_kind p) {
    occupancy o(&s->inside, &s->max_inside);
    const long seen = s->counter;
    co_await pause(p);
    s->counter = seen + 1;
}

tandem::task<> rmw_worker(exclusion_state* s, guard_kind g, pause_kind p, int rounds) {
    for (int i = 0; i < rounds; ++i) {
        switch (g) {
            case guard_kind::lock_unlock:
                co_await s->m.lock();
                co_await increment_across_pause(s, p);
                s->m.unlock();
                break;
            case guard_kind::scoped: {
                auto guard = co_await s->m.scoped();
                co_await increment_across_pause(s, p);
                break;
            }
            case guard_kind::semaphore:
                co_await s->one.acquire();
                co_await increment_across_pause(s, p);
                s->one.release();
                break;
        }
    }
}

}  // namespace

TEST_CASE(
    "mutex, scoped() and semaphore(1) keep read-modify-writes across yield() and sleep_for(0) "
    "from overlapping, and lose no update",
    "[sync][mutex][semaphore]") {
    const unsigned threads = GENERATE(1u, 2u);
    const auto g = GENERATE(guard_kind::lock_unlock, guard_kind::scoped, guard_kind::semaphore);
    const auto p = GENERATE(pause_kind::yield, pause_kind::sleep_zero);
    INFO("io threads: " << threads << ", guard " << int(g) << ", pause " << int(p));
    constexpr int tasks = 32;
    constexpr int rounds = 100;

    exclusion_state s;
    {
        io_threads io(threads);
        for (int t = 0; t < tasks; ++t) io.start(unsigned(t), rmw_worker(&s, g, p, rounds));
        io.join();
    }
    CHECK(s.counter == long(tasks) * rounds);
    CHECK(s.max_inside.load() == 1);
    CHECK(s.m.try_lock());
    s.m.unlock();
    CHECK(s.one.available() == 1);
}

// ---- mutex ----------------------------------------------------------------------------

namespace {

struct fifo_state {
    tandem::mutex m;
    std::vector<int> order;  // guarded by m
    std::atomic<int> wrong_loop{0};
};

/// Takes the lock, notes its turn, keeps the lock across a yield, gives it back.
tandem::task<> fifo_waiter(fifo_state* s, int id) {
    const loop_ptr home = tandem::detail::current_loop();
    co_await s->m.lock();
    if (tandem::detail::current_loop() != home) s->wrong_loop.fetch_add(1);
    s->order.push_back(id);
    co_await tandem::yield();
    s->m.unlock();
}

std::vector<tandem::task<>> fifo_waiters(fifo_state* s, int first, int n) {
    std::vector<tandem::task<>> v;
    for (int id = first; id < first + n; ++id) v.push_back(fifo_waiter(s, id));
    return v;
}

std::vector<int> iota_vector(int n) {
    std::vector<int> v(std::size_t(n), 0);
    std::iota(v.begin(), v.end(), 0);
    return v;
}

}  // namespace

TEST_CASE("mutex: waiters take the lock in the order they queued (FIFO)", "[sync][mutex]") {
    const unsigned threads = GENERATE(1u, 2u);
    INFO("io threads: " << threads);
    fifo_state s;
    io_threads io(threads);
    REQUIRE(s.m.try_lock());  // the test's thread holds it while the queue forms
    // Queue in a known order: the first group parks (on the last io thread) before the second
    // group (on the first) starts.
    std::latch first_parked(1), second_parked(1);
    io.start(threads - 1, park_all(fifo_waiters(&s, 0, 10), &first_parked));
    first_parked.wait();
    io.start(0, park_all(fifo_waiters(&s, 10, 10), &second_parked));
    second_parked.wait();
    s.m.unlock();  // from a plain thread: hands the lock to waiter 0
    io.join();
    CHECK(s.order == iota_vector(20));
    CHECK(s.wrong_loop.load() == 0);
    CHECK(s.m.try_lock());
    s.m.unlock();
}

namespace {

struct handover_state {
    tandem::mutex m;
    tandem::event release;
    std::atomic<bool> got_lock{false};
};

tandem::task<> lock_until_released(handover_state* s) {
    co_await s->m.lock();
    s->got_lock = true;
    co_await s->release.wait();
    s->m.unlock();
}

}  // namespace

TEST_CASE("mutex: try_lock fails while locked, and cannot barge in ahead of a waiter",
          "[sync][mutex]") {
    const unsigned threads = GENERATE(1u, 2u);
    INFO("io threads: " << threads);
    handover_state s;
    io_threads io(threads);
    CHECK(s.m.try_lock());
    CHECK_FALSE(s.m.try_lock());
    s.m.unlock();
    CHECK(s.m.try_lock());

    std::vector<tandem::task<>> waiter;
    waiter.push_back(lock_until_released(&s));
    std::latch parked(1);
    io.start(threads - 1, park_all(std::move(waiter), &parked));
    parked.wait();
    CHECK_FALSE(s.got_lock.load());
    s.m.unlock();                 // hands the lock to the waiter...
    CHECK_FALSE(s.m.try_lock());  // ...so a newcomer cannot take it, even before it runs
    s.release.set();
    io.join();
    CHECK(s.got_lock.load());
    CHECK(s.m.try_lock());
    s.m.unlock();
}

namespace {

struct scoped_report {
    bool owned = false;
    bool locked_while_guarded = false;
    bool free_after_scope = false;
    bool free_after_early_unlock = false;
    bool moved_from_owns = true;
    bool moved_to_owns = false;
    bool free_after_move_scope = false;
    bool free_after_throw = false;
    bool free_after_throw_across_yield = false;
    std::string thrown;
};

tandem::task<> throw_while_guarded(tandem::mutex* m, bool across_yield) {
    auto guard = co_await m->scoped();
    if (across_yield) co_await tandem::yield();
    throw std::runtime_error("thrown while holding the guard");
}

/// try_lock on a mutex that should be free; gives the lock back if it took it.
bool is_free(tandem::mutex& m) {
    if (!m.try_lock()) return false;
    m.unlock();
    return true;
}

tandem::task<scoped_report> exercise_scoped(tandem::mutex* m) {
    scoped_report r;
    {
        auto guard = co_await m->scoped();
        r.owned = guard.owns_lock();
        r.locked_while_guarded = !m->try_lock();
        co_await tandem::yield();
    }
    r.free_after_scope = is_free(*m);
    {
        auto guard = co_await m->scoped();
        guard.unlock();  // the destructor must not unlock a second time (that would abort)
        r.free_after_early_unlock = is_free(*m) && !guard.owns_lock();
    }
    {
        auto guard = co_await m->scoped();
        tandem::mutex::scoped_lock other(std::move(guard));
        r.moved_from_owns = guard.owns_lock();
        r.moved_to_owns = other.owns_lock();
        tandem::mutex::scoped_lock third;
        third = std::move(other);  // one owner all along: unlocked exactly once below
    }
    r.free_after_move_scope = is_free(*m);
    try {
        co_await throw_while_guarded(m, false);
    } catch (const std::runtime_error& e) {
        r.thrown = e.what();
    }
    r.free_after_throw = is_free(*m);
    try {
        co_await throw_while_guarded(m, true);
    } catch (const std::runtime_error&) {
    }
    r.free_after_throw_across_yield = is_free(*m);
    co_return r;
}

}  // namespace

TEST_CASE(
    "mutex: the scoped() guard unlocks at the end of its scope, on unlock(), once after a "
    "move, and when an exception leaves the scope",
    "[sync][mutex]") {
    tandem::mutex m;
    io_threads io(1);
    const scoped_report r = io.run(0, exercise_scoped(&m));
    CHECK(r.owned);
    CHECK(r.locked_while_guarded);
    CHECK(r.free_after_scope);
    CHECK(r.free_after_early_unlock);
    CHECK_FALSE(r.moved_from_owns);
    CHECK(r.moved_to_owns);
    CHECK(r.free_after_move_scope);
    CHECK(r.thrown == "thrown while holding the guard");
    CHECK(r.free_after_throw);
    CHECK(r.free_after_throw_across_yield);
}

namespace {

tandem::task<> lock_only(tandem::mutex* m) {
    co_await m->lock();
}

tandem::task<> unlock_only(tandem::mutex* m) {
    m->unlock();
    co_return;
}

struct cross_unlock_state {
    tandem::mutex m;
    std::atomic<int> woken{0};
    std::atomic<int> wrong_loop{0};
};

tandem::task<> lock_then_unlock(cross_unlock_state* s) {
    const loop_ptr home = tandem::detail::current_loop();
    co_await s->m.lock();
    if (tandem::detail::current_loop() != home) s->wrong_loop.fetch_add(1);
    s->woken.fetch_add(1);
    s->m.unlock();
}

}  // namespace

TEST_CASE(
    "mutex: a lock taken on one io thread can be released on the other or on a plain thread, "
    "and the waiter resumes on its own loop",
    "[sync][mutex]") {
    cross_unlock_state s;
    io_threads io(2);
    for (int round = 0; round < 20; ++round) {
        // Locked by a task on loop (round % 2); a waiter queues on the other loop; the lock is
        // released by the other loop or by a plain thread.
        const unsigned locker = unsigned(round) % 2;
        io.run(locker, lock_only(&s.m));
        std::vector<tandem::task<>> waiter;
        waiter.push_back(lock_then_unlock(&s));
        std::latch parked(1);
        io.start(locker + 1, park_all(std::move(waiter), &parked));
        parked.wait();
        if (round % 4 < 2) {
            io.run(locker + 1, unlock_only(&s.m));
        } else {
            std::thread([&s] { s.m.unlock(); }).join();
        }
        io.join();
    }
    CHECK(s.woken.load() == 20);
    CHECK(s.wrong_loop.load() == 0);
    CHECK(s.m.try_lock());
    s.m.unlock();
}

// ---- semaphore ------------------------------------------------------------------------

namespace {

struct permit_state {
    explicit permit_state(std::ptrdiff_t n) : sem(n) {}
    tandem::semaphore sem;
    std::atomic<int> inside{0};
    std::atomic<int> max_inside{0};
    std::atomic<long> sections{0};
};

tandem::task<> hold_permits(permit_state* s, int rounds, int id) {
    for (int i = 0; i < rounds; ++i) {
        co_await s->sem.acquire();
        {
            occupancy o(&s->inside, &s->max_inside);
            const pause_kind p = (i + id) % 3 == 0 ? pause_kind::sleep_zero : pause_kind::yield;
            co_await pause(p);
            s->sections.fetch_add(1);
        }
        s->sem.release();
    }
}

}  // namespace

TEST_CASE("semaphore: never more holders than permits, and every permit comes back",
          "[sync][semaphore]") {
    const unsigned threads = GENERATE(1u, 2u);
    INFO("io threads: " << threads);
    constexpr int tasks = 64;
    constexpr int rounds = 30;
    permit_state s(3);
    {
        io_threads io(threads);
        // One group per loop: its first three tasks take the permits and pause, at once.
        for (unsigned l = 0; l < threads; ++l) {
            std::vector<tandem::task<>> group;
            for (int t = int(l); t < tasks; t += int(threads)) {
                group.push_back(hold_permits(&s, rounds, t));
            }
            io.start(l, run_all(std::move(group)));
        }
        io.join();
    }
    CHECK(s.sections.load() == long(tasks) * rounds);
    CHECK(s.max_inside.load() <= 3);
    if (threads == 1) CHECK(s.max_inside.load() == 3);  // the first three hold across a pause
    CHECK(s.sem.available() == 3);
}

TEST_CASE("semaphore: try_acquire takes a free permit and never waits", "[sync][semaphore]") {
    tandem::semaphore sem(2);
    CHECK(sem.available() == 2);
    CHECK(sem.try_acquire());
    CHECK(sem.try_acquire());
    CHECK_FALSE(sem.try_acquire());
    CHECK(sem.available() == 0);
    sem.release();
    CHECK(sem.available() == 1);
    CHECK(sem.try_acquire());
    sem.release(2);
    CHECK(sem.available() == 2);
    sem.release(0);
    CHECK(sem.available() == 2);
    tandem::semaphore none(0);
    CHECK_FALSE(none.try_acquire());
}

namespace {

struct release_state {
    tandem::semaphore sem{0};
    std::vector<int> order;  // one loop only
    std::size_t woken_after_first_release = 0;
    std::ptrdiff_t available_after_first_release = -1;
    bool try_acquire_after_first_release = true;
};

tandem::task<> acquire_and_note(release_state* s, int id) {
    co_await s->sem.acquire();
    s->order.push_back(id);
}

tandem::task<> release_in_two_steps(release_state* s) {
    // Runs once the six waiters are queued.
    s->sem.release(3);
    s->available_after_first_release = s->sem.available();  // handed over, none left free
    s->try_acquire_after_first_release = s->sem.try_acquire();
    co_await tandem::yield();  // the three woken ones run before this resumes (FIFO loop)
    s->woken_after_first_release = s->order.size();
    s->sem.release(5);  // three for the rest, two left over
}

}  // namespace

TEST_CASE("semaphore: release(n) wakes exactly n waiters, longest waiting first",
          "[sync][semaphore]") {
    release_state s;
    io_threads io(1);
    std::vector<tandem::task<>> tasks;
    for (int id = 0; id < 6; ++id) tasks.push_back(acquire_and_note(&s, id));
    tasks.push_back(release_in_two_steps(&s));
    io.run(0, tandem::when_all(std::move(tasks)));
    CHECK(s.available_after_first_release == 0);
    CHECK_FALSE(s.try_acquire_after_first_release);
    CHECK(s.woken_after_first_release == 3);
    CHECK(s.order == iota_vector(6));
    CHECK(s.sem.available() == 2);
}

namespace {

struct cross_release_state {
    tandem::semaphore sem{0};
    std::atomic<int> woken{0};
    std::atomic<int> wrong_loop{0};
    std::latch* woken_latch = nullptr;
};

tandem::task<> acquire_on_loop(cross_release_state* s) {
    const loop_ptr home = tandem::detail::current_loop();
    co_await s->sem.acquire();
    if (tandem::detail::current_loop() != home) s->wrong_loop.fetch_add(1);
    s->woken.fetch_add(1);
    s->woken_latch->count_down();
}

}  // namespace

TEST_CASE("semaphore: release(n) from a plain thread hands n permits to waiters on two io threads",
          "[sync][semaphore]") {
    constexpr int per_loop = 4;
    cross_release_state s;
    std::latch all_woken(2 * per_loop);
    s.woken_latch = &all_woken;
    io_threads io(2);
    for (unsigned l = 0; l < 2; ++l) {
        std::vector<tandem::task<>> waiters;
        for (int i = 0; i < per_loop; ++i) waiters.push_back(acquire_on_loop(&s));
        std::latch parked(1);
        io.start(l, park_all(std::move(waiters), &parked));
        parked.wait();
    }
    s.sem.release(5);
    CHECK(s.sem.available() == 0);  // all five handed to waiters
    s.sem.release(3 + 2);
    CHECK(s.sem.available() == 2);  // three more waiters served, two left over
    all_woken.wait();
    io.join();
    CHECK(s.woken.load() == 2 * per_loop);
    CHECK(s.wrong_loop.load() == 0);
    CHECK(s.sem.available() == 2);
}

// ---- event ----------------------------------------------------------------------------

namespace {

struct event_state {
    tandem::event ev;
    int payload = 0;  // plain: written before set(), read after wait() (TSan checks the order)
    std::atomic<int> woken{0};
    std::atomic<int> wrong_loop{0};
    std::atomic<int> payload_missing{0};

    void publish_and_set() {
        payload = 42;
        ev.set();
    }
};

tandem::task<> wait_for_event(event_state* s) {
    const loop_ptr home = tandem::detail::current_loop();
    co_await s->ev.wait();
    if (tandem::detail::current_loop() != home) s->wrong_loop.fetch_add(1);
    if (s->payload != 42) s->payload_missing.fetch_add(1);
    s->woken.fetch_add(1);
}

tandem::task<> set_event(event_state* s) {
    s->publish_and_set();
    co_return;
}

/// Parks `n` waiters on every io thread and returns once all of them are parked.
void park_event_waiters(io_threads& io, event_state* s, int n) {
    std::latch parked(io.count());
    for (unsigned l = 0; l < io.count(); ++l) {
        std::vector<tandem::task<>> waiters;
        for (int i = 0; i < n; ++i) waiters.push_back(wait_for_event(s));
        io.start(l, park_all(std::move(waiters), &parked));
    }
    parked.wait();
}

}  // namespace

TEST_CASE("event: set() wakes every waiter, on each io thread, from a task or a plain thread",
          "[sync][event]") {
    const unsigned threads = GENERATE(1u, 2u);
    const int setter = GENERATE(0, 1, 2);  // a task on loop 0, the last loop, a std::thread
    INFO("io threads: " << threads << ", setter " << setter);
    constexpr int per_loop = 25;
    event_state s;
    io_threads io(threads);
    park_event_waiters(io, &s, per_loop);
    CHECK(s.woken.load() == 0);
    CHECK_FALSE(s.ev.is_set());
    if (setter == 2) {
        std::thread([&s] { s.publish_and_set(); }).join();
    } else {
        io.run(setter == 0 ? 0u : threads - 1, set_event(&s));
    }
    // Late waiters find it set and return at once.
    for (unsigned l = 0; l < threads; ++l) io.start(l, wait_for_event(&s));
    io.join();
    CHECK(s.ev.is_set());
    CHECK(s.woken.load() == (per_loop + 1) * int(threads));
    CHECK(s.wrong_loop.load() == 0);
    CHECK(s.payload_missing.load() == 0);
}

namespace {

struct inline_state {
    tandem::event ev;
    int woken = 0;
    int woken_when_set_returned = -1;
    int woken_after_yield = -1;
};

tandem::task<> wait_and_count(inline_state* s) {
    co_await s->ev.wait();
    ++s->woken;
}

tandem::task<> set_reset_and_look(inline_state* s) {
    s->ev.set();
    s->ev.reset();  // tasks already woken stay woken
    s->woken_when_set_returned = s->woken;
    co_await tandem::yield();
    s->woken_after_yield = s->woken;
}

}  // namespace

TEST_CASE(
    "event: set() resumes waiters later on their loop, never inside set(), and a reset() "
    "right after does not take the wake-up back",
    "[sync][event]") {
    inline_state s;
    io_threads io(1);
    io.run(0, tandem::when_all(wait_and_count(&s), wait_and_count(&s), set_reset_and_look(&s)));
    CHECK(s.woken_when_set_returned == 0);
    CHECK(s.woken_after_yield == 2);
    CHECK_FALSE(s.ev.is_set());
}

namespace {

enum class wait_result { returned, timed_out, cancelled, other };

tandem::task<wait_result> wait_with_timeout(tandem::event* ev, std::chrono::nanoseconds d) {
    try {
        co_await tandem::timeout(d, ev->wait());
        co_return wait_result::returned;
    } catch (const tandem::timed_out&) {
        co_return wait_result::timed_out;
    }
}

tandem::task<wait_result> wait_with_token(tandem::event* ev, std::stop_token token) {
    try {
        co_await tandem::with_stop_token(std::move(token), ev->wait());
        co_return wait_result::returned;
    } catch (const tandem::operation_cancelled&) {
        co_return wait_result::cancelled;
    } catch (...) {
        co_return wait_result::other;
    }
}

}  // namespace

TEST_CASE("event: wait() on a set event returns at once, even for a cancelled task; reset() clears",
          "[sync][event]") {
    tandem::event ev;
    io_threads io(1);
    std::stop_source stopped;
    stopped.request_stop();
    CHECK(io.run(0, wait_with_token(&ev, stopped.get_token())) == wait_result::cancelled);
    CHECK(io.run(0, wait_with_timeout(&ev, 2ms)) == wait_result::timed_out);
    ev.set();
    CHECK(ev.is_set());
    // No suspension: a stopped task is not even asked (a wait that need not suspend does not
    // check for cancellation).
    CHECK(io.run(0, wait_with_token(&ev, stopped.get_token())) == wait_result::returned);
    CHECK(io.run(0, wait_with_timeout(&ev, 0ns)) == wait_result::returned);
    ev.set();  // idempotent
    ev.reset();
    CHECK_FALSE(ev.is_set());
    CHECK(io.run(0, wait_with_timeout(&ev, 2ms)) == wait_result::timed_out);
    ev.reset();
    ev.set();
    CHECK(io.run(0, wait_with_timeout(&ev, 10s)) == wait_result::returned);
}

namespace {

tandem::task<> give_up_on_event(event_state* s, std::latch* gave_up) {
    try {
        co_await tandem::timeout(2ms, s->ev.wait());
    } catch (const tandem::timed_out&) {
        gave_up->count_down();
    }
}

}  // namespace

TEST_CASE("event: waiters that time out leave the queue; the others still wake",
          "[sync][event][cancel]") {
    const unsigned threads = GENERATE(1u, 2u);
    INFO("io threads: " << threads);
    event_state s;
    io_threads io(threads);
    // On each loop, waiters that give up sit between waiters that stay (first, middle, last).
    std::latch parked(threads), gave_up(3 * threads);
    for (unsigned l = 0; l < threads; ++l) {
        std::vector<tandem::task<>> waiters;
        waiters.push_back(give_up_on_event(&s, &gave_up));
        for (int i = 0; i < 3; ++i) waiters.push_back(wait_for_event(&s));
        waiters.push_back(give_up_on_event(&s, &gave_up));
        for (int i = 0; i < 3; ++i) waiters.push_back(wait_for_event(&s));
        waiters.push_back(give_up_on_event(&s, &gave_up));
        io.start(l, park_all(std::move(waiters), &parked));
    }
    parked.wait();
    gave_up.wait();
    CHECK(s.woken.load() == 0);
    std::thread([&s] { s.publish_and_set(); }).join();
    io.join();
    CHECK(s.woken.load() == 6 * int(threads));
    CHECK(s.payload_missing.load() == 0);
    CHECK(s.wrong_loop.load() == 0);
}

// ---- condition_variable -----------------------------------------------------------

namespace {

/// A bounded queue on a tandem::mutex and two condition variables (predicate form).
struct cv_queue {
    tandem::mutex m;
    tandem::condition_variable not_empty;
    tandem::condition_variable not_full;
    std::deque<int> items;   // guarded by m
    int producers_left = 0;  // guarded by m
    static constexpr std::size_t bound = 4;
    std::vector<std::atomic<int>> seen;
    std::atomic<int> inside{0};
    std::atomic<int> max_inside{0};
    explicit cv_queue(std::size_t n) : seen(n) {}
};

tandem::task<> cv_producer(cv_queue* q, int first, int n) {
    for (int id = first; id < first + n; ++id) {
        co_await q->m.lock();
        co_await q->not_full.wait(q->m, [q] { return q->items.size() < cv_queue::bound; });
        {
            occupancy o(&q->inside, &q->max_inside);
            q->items.push_back(id);
        }
        q->not_empty.notify_one();
        q->m.unlock();
        if (id % 7 == 0) co_await tandem::yield();
    }
    co_await q->m.lock();
    if (--q->producers_left == 0) q->not_empty.notify_all();
    q->m.unlock();
}

tandem::task<> cv_consumer(cv_queue* q) {
    for (;;) {
        auto guard = co_await q->m.scoped();
        co_await q->not_empty.wait(q->m,
                                   [q] { return !q->items.empty() || q->producers_left == 0; });
        occupancy o(&q->inside, &q->max_inside);
        if (q->items.empty()) co_return;  // every producer is done
        const int id = q->items.front();
        q->items.pop_front();
        q->seen[std::size_t(id)].fetch_add(1);
        q->not_full.notify_one();
    }
}

}  // namespace

TEST_CASE(
    "condition_variable: producers and consumers on a bounded queue (predicate form) move "
    "every item exactly once",
    "[sync][condition_variable]") {
    const unsigned threads = GENERATE(1u, 2u);
    INFO("io threads: " << threads);
    constexpr int producers = 4, consumers = 4, per_producer = 500;
    cv_queue q(producers * per_producer);
    q.producers_left = producers;
    {
        io_threads io(threads);
        for (int p = 0; p < producers; ++p) {
            io.start(unsigned(p), cv_producer(&q, p * per_producer, per_producer));
        }
        for (int c = 0; c < consumers; ++c) io.start(unsigned(c + 1), cv_consumer(&q));
        io.join();
    }
    int wrong = 0;
    for (auto& n : q.seen) wrong += n.load() != 1;
    CHECK(wrong == 0);
    CHECK(q.items.empty());
    CHECK(q.max_inside.load() == 1);
    CHECK(q.m.try_lock());
    q.m.unlock();
}

namespace {

struct notify_state {
    tandem::mutex m;
    tandem::condition_variable cv;
    std::vector<int> order;  // guarded by m
    std::atomic<int> inside{0};
    std::atomic<int> max_inside{0};
    std::atomic<int> not_held{0};
    std::atomic<int> wrong_loop{0};
    std::size_t after_first = 0, after_second = 0;
};

/// Locks, waits for one notification, checks it holds the mutex again, notes its turn.
tandem::task<> cv_waiter(notify_state* s, int id) {
    const loop_ptr home = tandem::detail::current_loop();
    co_await s->m.lock();
    co_await s->cv.wait(s->m);
    if (tandem::detail::current_loop() != home) s->wrong_loop.fetch_add(1);
    // It must hold the mutex again, so try_lock has to fail (if it took it, it holds it now).
    if (s->m.try_lock()) s->not_held.fetch_add(1);
    {
        occupancy o(&s->inside, &s->max_inside);
        s->order.push_back(id);
        co_await tandem::yield();  // still exclusive across a suspension
    }
    s->m.unlock();
}

tandem::task<> notify_one_at_a_time(notify_state* s) {
    // Runs once the waiters are queued; each woken one runs to its end within two turns.
    s->cv.notify_one();
    co_await tandem::yield();
    co_await tandem::yield();
    s->after_first = s->order.size();
    s->cv.notify_one();
    co_await tandem::yield();
    co_await tandem::yield();
    s->after_second = s->order.size();
    s->cv.notify_all();
}

}  // namespace

TEST_CASE(
    "condition_variable: notify_one wakes exactly one waiter, the longest waiting; notify_all "
    "wakes the rest; each holds the mutex again",
    "[sync][condition_variable]") {
    notify_state s;
    io_threads io(1);
    std::vector<tandem::task<>> tasks;
    for (int id = 0; id < 6; ++id) tasks.push_back(cv_waiter(&s, id));
    tasks.push_back(notify_one_at_a_time(&s));
    io.run(0, tandem::when_all(std::move(tasks)));
    CHECK(s.after_first == 1);
    CHECK(s.after_second == 2);
    CHECK(s.order == iota_vector(6));
    CHECK(s.not_held.load() == 0);
    CHECK(s.max_inside.load() == 1);
    CHECK(s.m.try_lock());
    s.m.unlock();
}

TEST_CASE(
    "condition_variable: notify_all from a plain thread wakes waiters on two io threads, each "
    "in turn holding the mutex",
    "[sync][condition_variable]") {
    constexpr int per_loop = 10;
    notify_state s;
    io_threads io(2);
    for (unsigned l = 0; l < 2; ++l) {
        std::vector<tandem::task<>> waiters;
        for (int i = 0; i < per_loop; ++i) waiters.push_back(cv_waiter(&s, int(l) * 100 + i));
        std::latch parked(1);
        io.start(l, park_all(std::move(waiters), &parked));
        parked.wait();
    }
    // Every waiter released the mutex when it queued.
    CHECK(s.m.try_lock());
    s.m.unlock();
    std::thread([&s] { s.cv.notify_all(); }).join();
    io.join();
    CHECK(s.order.size() == 2 * per_loop);
    CHECK(s.not_held.load() == 0);
    CHECK(s.max_inside.load() == 1);
    CHECK(s.wrong_loop.load() == 0);
}

namespace {

struct cv_cancel_state {
    tandem::mutex m;
    tandem::condition_variable cv;
    std::atomic<bool> locked{false};          // the waiter took the mutex (before its wait)
    std::atomic<bool> other_released{false};  // the test's thread let go of the mutex
    std::atomic<bool> loop_blocked{false}, unblock{false};
    int timed_out = 0, cancelled = 0, returned = 0;  // written by the one waiter
    bool held_after = false;
    bool other_released_first = false;
};

/// After the wait, whether this task holds the mutex: try_lock must fail. Leaves it unlocked.
void note_held_and_unlock(cv_cancel_state* s) {
    s->held_after = !s->m.try_lock();
    s->m.unlock();  // the wait's lock, or the one try_lock just took
}

/// Waits on the condition variable under `limit`.
tandem::task<> cv_wait_with_timeout(cv_cancel_state* s, std::chrono::nanoseconds limit) {
    co_await s->m.lock();
    s->locked = true;
    try {
        co_await tandem::timeout(limit, s->cv.wait(s->m));
        ++s->returned;
    } catch (const tandem::timed_out&) {
        ++s->timed_out;
    }
    s->other_released_first = s->other_released.load();
    note_held_and_unlock(s);
}

tandem::task<> cv_wait_with_token(cv_cancel_state* s, std::stop_token token) {
    co_await s->m.lock();
    s->locked = true;
    try {
        co_await tandem::with_stop_token(std::move(token), s->cv.wait(s->m));
        ++s->returned;
    } catch (const tandem::operation_cancelled&) {
        ++s->cancelled;
    }
    note_held_and_unlock(s);
}

/// Keeps its loop's thread busy (no timer fires, no posted item runs) until told to stop.
tandem::task<> block_loop_until_told(cv_cancel_state* s) {
    s->loop_blocked = true;
    while (!s->unblock.load()) std::this_thread::yield();
    co_return;
}

/// The waiter queues on the condition variable, then its loop stops until the test says.
tandem::task<> cv_wait_then_block_loop(cv_cancel_state* s, std::chrono::nanoseconds limit) {
    co_await tandem::when_all(cv_wait_with_timeout(s, limit), block_loop_until_told(s));
}

/// From the test's thread: takes the mutex once the waiter has released it in its wait.
void take_mutex_from_waiter(cv_cancel_state& s) {
    while (!s.locked.load()) std::this_thread::yield();
    while (!s.m.try_lock()) std::this_thread::yield();
}

}  // namespace

TEST_CASE("condition_variable: a wait that is cancelled holds the mutex again when it throws",
          "[sync][condition_variable][cancel]") {
    const unsigned threads = GENERATE(1u, 2u);
    INFO("io threads: " << threads);
    SECTION("timed out, with nobody else on the mutex") {
        cv_cancel_state s;
        io_threads io(threads);
        io.run(threads - 1, cv_wait_with_timeout(&s, 1ms));
        CHECK(s.timed_out == 1);
        CHECK(s.held_after);
        CHECK(s.m.try_lock());
        s.m.unlock();
    }
    SECTION("timed out while another thread holds the mutex: timed_out waits for the unlock") {
        cv_cancel_state s;
        io_threads io(threads);
        io.start(threads - 1, cv_wait_then_block_loop(&s, 1ms));
        // The waiter is queued and its loop is held up, so its deadline cannot fire yet:
        // the mutex it released is free for this thread to take.
        while (!s.loop_blocked.load()) std::this_thread::yield();
        REQUIRE(s.m.try_lock());
        std::this_thread::sleep_for(2ms);  // past the deadline: it fires when the loop runs
        s.unblock = true;
        // Not a timing assertion: whenever the deadline fires, the waiter cannot return before
        // this unlock. The pause only makes it likely to fire while the lock is held here.
        std::this_thread::sleep_for(20ms);
        s.other_released = true;
        s.m.unlock();
        io.join();
        CHECK(s.timed_out == 1);
        CHECK(s.other_released_first);
        CHECK(s.held_after);
        CHECK(s.m.try_lock());
        s.m.unlock();
    }
    SECTION("cancelled from a plain thread through a stop token") {
        cv_cancel_state s;
        io_threads io(threads);
        std::stop_source source;
        io.start(threads - 1, cv_wait_with_token(&s, source.get_token()));
        take_mutex_from_waiter(s);
        source.request_stop();  // the waiter leaves the queue, then waits for the mutex
        s.m.unlock();
        io.join();
        CHECK(s.cancelled == 1);
        CHECK(s.returned == 0);
        CHECK(s.held_after);
        CHECK(s.m.try_lock());
        s.m.unlock();
    }
}

namespace {

struct lost_notify_state {
    tandem::mutex m;
    tandem::condition_variable cv;
    int gave_up = 0;
    int woken = 0;
};

tandem::task<> cv_give_up(lost_notify_state* s) {
    co_await s->m.lock();
    try {
        co_await tandem::timeout(1ms, s->cv.wait(s->m));
    } catch (const tandem::timed_out&) {
        ++s->gave_up;
    }
    s->m.unlock();
}

tandem::task<> cv_wait_for_notify(lost_notify_state* s) {
    co_await s->m.lock();
    try {
        co_await tandem::timeout(20s, s->cv.wait(s->m));  // (a bound for a lost notification)
        ++s->woken;
    } catch (const tandem::timed_out&) {
    }
    s->m.unlock();
}

tandem::task<> notify_after_give_up(lost_notify_state* s) {
    while (s->gave_up == 0) co_await tandem::sleep_for(1ms);
    s->cv.notify_one();  // must reach the waiter still queued, not the one that left
}

}  // namespace

TEST_CASE("condition_variable: a waiter that timed out leaves the queue and takes no notification",
          "[sync][condition_variable][cancel]") {
    lost_notify_state s;
    io_threads io(1);
    // The one that gives up queues first, so a notify_one that still found it would be lost.
    io.run(0, tandem::when_all(cv_give_up(&s), cv_wait_for_notify(&s), notify_after_give_up(&s)));
    CHECK(s.gave_up == 1);
    CHECK(s.woken == 1);
}

// ---- latch ------------------------------------------------------------------------

namespace {

struct latch_state {
    latch_state(std::ptrdiff_t n, std::size_t writers) : l(n), total(n), marks(writers, 0) {}
    tandem::latch l;
    const std::ptrdiff_t total;
    std::vector<int> marks;  // plain: each counter sets its own before counting down
    std::atomic<std::ptrdiff_t> counted{0};  // raised just before each count_down
    std::atomic<int> early{0};               // a waiter returned before the last count_down
    std::atomic<int> woken{0};
    std::atomic<int> wrong_loop{0};
};

tandem::task<> latch_waiter(latch_state* s) {
    const loop_ptr home = tandem::detail::current_loop();
    co_await s->l.wait();
    if (tandem::detail::current_loop() != home) s->wrong_loop.fetch_add(1);
    if (s->counted.load() != s->total || !s->l.try_wait()) s->early.fetch_add(1);
    for (const int m : s->marks) {
        if (m != 1) s->early.fetch_add(1);
    }
    s->woken.fetch_add(1);
}

tandem::task<> latch_counter(latch_state* s, std::size_t index, int times) {
    s->marks[index] = 1;
    for (int i = 0; i < times; ++i) {
        co_await tandem::yield();
        s->counted.fetch_add(1);
        s->l.count_down();
    }
}

}  // namespace

TEST_CASE("latch: count_down from many tasks and threads; wait returns at zero, on every loop",
          "[sync][latch]") {
    const unsigned threads = GENERATE(1u, 2u);
    INFO("io threads: " << threads);
    constexpr int counters = 16, each = 10, plain_threads = 4, plain_each = 25;
    latch_state s(counters * each + plain_threads * plain_each * 2,
                  std::size_t(counters + plain_threads));
    io_threads io(threads);
    std::latch parked(threads);
    for (unsigned l = 0; l < threads; ++l) {
        std::vector<tandem::task<>> waiters;
        for (int i = 0; i < 8; ++i) waiters.push_back(latch_waiter(&s));
        io.start(l, park_all(std::move(waiters), &parked));
    }
    parked.wait();
    CHECK_FALSE(s.l.try_wait());
    for (int c = 0; c < counters; ++c) {
        io.start(unsigned(c), latch_counter(&s, std::size_t(c), each));
    }
    std::vector<std::thread> plain;
    for (int t = 0; t < plain_threads; ++t) {
        plain.emplace_back([&s, index = std::size_t(counters + t)] {
            s.marks[index] = 1;
            for (int i = 0; i < plain_each; ++i) {
                s.counted.fetch_add(2);
                s.l.count_down(2);
            }
        });
    }
    for (auto& t : plain) t.join();
    io.join();
    CHECK(s.l.try_wait());
    CHECK(s.woken.load() == 8 * int(threads));
    CHECK(s.early.load() == 0);
    CHECK(s.wrong_loop.load() == 0);
}

namespace {

struct last_count_state {
    tandem::latch l{5};
    int woken = 0;  // one loop
    int woken_before_last = -1;
    int woken_right_after_last = -1;
};

tandem::task<> wait_latch_and_count(last_count_state* s) {
    co_await s->l.wait();
    ++s->woken;
}

tandem::task<> count_down_to_zero(last_count_state* s) {
    // Runs once the waiters are queued.
    s->l.count_down(3);
    co_await tandem::yield();
    s->l.count_down();  // one left
    co_await tandem::yield();
    co_await tandem::yield();
    s->woken_before_last = s->woken;
    s->l.count_down();
    s->woken_right_after_last = s->woken;  // resumed later, not inside count_down
    co_await tandem::yield();
}

}  // namespace

TEST_CASE("latch: waiters stay queued until the last count_down, then all wake", "[sync][latch]") {
    last_count_state s;
    io_threads io(1);
    io.run(0, tandem::when_all(wait_latch_and_count(&s), wait_latch_and_count(&s),
                               wait_latch_and_count(&s), count_down_to_zero(&s)));
    CHECK(s.woken_before_last == 0);
    CHECK(s.woken_right_after_last == 0);
    CHECK(s.woken == 3);
    CHECK(s.l.try_wait());
}

namespace {

tandem::task<wait_result> latch_wait_with_timeout(tandem::latch* l, std::chrono::nanoseconds d) {
    try {
        co_await tandem::timeout(d, l->wait());
        co_return wait_result::returned;
    } catch (const tandem::timed_out&) {
        co_return wait_result::timed_out;
    }
}

tandem::task<wait_result> latch_wait_with_token(tandem::latch* l, std::stop_token token) {
    try {
        co_await tandem::with_stop_token(std::move(token), l->wait());
        co_return wait_result::returned;
    } catch (const tandem::operation_cancelled&) {
        co_return wait_result::cancelled;
    }
}

}  // namespace

TEST_CASE(
    "latch: try_wait is true only at zero; wait at zero returns at once; a timed-out wait "
    "changes nothing",
    "[sync][latch]") {
    tandem::latch zero(0);
    CHECK(zero.try_wait());
    tandem::latch l(3);
    io_threads io(1);
    std::stop_source stopped;
    stopped.request_stop();
    CHECK(io.run(0, latch_wait_with_token(&zero, stopped.get_token())) == wait_result::returned);
    CHECK_FALSE(l.try_wait());
    CHECK(io.run(0, latch_wait_with_timeout(&l, 1ms)) == wait_result::timed_out);
    l.count_down(2);
    CHECK_FALSE(l.try_wait());
    CHECK(io.run(0, latch_wait_with_token(&l, stopped.get_token())) == wait_result::cancelled);
    l.count_down();
    CHECK(l.try_wait());
    CHECK(io.run(0, latch_wait_with_timeout(&l, 0ns)) == wait_result::returned);
    CHECK(io.run(0, latch_wait_with_token(&l, stopped.get_token())) == wait_result::returned);
    l.count_down(0);  // allowed at zero
    CHECK(l.try_wait());
}

// ---- a wake-up and a cancellation that meet ------------------------------------------

namespace {

enum class primitive { mutex, semaphore, condition_variable, event, latch };

const char* name_of(primitive p) {
    switch (p) {
        case primitive::mutex:
            return "mutex";
        case primitive::semaphore:
            return "semaphore";
        case primitive::condition_variable:
            return "condition_variable";
        case primitive::event:
            return "event";
        case primitive::latch:
            return "latch";
    }
    return "?";
}

struct race_state {
    tandem::mutex m;
    tandem::semaphore sem{0};
    tandem::condition_variable cv;
    tandem::event ev;
    tandem::latch l{1};
    std::stop_source stop;
    std::atomic<int> returned{0}, cancelled{0};
    std::atomic<bool> held_after{false};  // mutex, condition_variable: the waiter held m after
    std::atomic<bool> loop_blocked{false}, unblock{false};
};

tandem::task<> wait_on(race_state* s, primitive p) {
    switch (p) {
        case primitive::mutex:
            return s->m.lock();
        case primitive::semaphore:
            return s->sem.acquire();
        case primitive::condition_variable:
            return s->cv.wait(s->m);
        case primitive::event:
            return s->ev.wait();
        case primitive::latch:
            return s->l.wait();
    }
    return s->ev.wait();
}

/// What hands the waiter what it waits for (the test's thread holds the mutex beforehand).
void wake(race_state* s, primitive p) {
    switch (p) {
        case primitive::mutex:
            s->m.unlock();
            break;
        case primitive::semaphore:
            s->sem.release();
            break;
        case primitive::condition_variable:
            s->cv.notify_one();
            break;
        case primitive::event:
            s->ev.set();
            break;
        case primitive::latch:
            s->l.count_down();
            break;
    }
}

tandem::task<> cancellable_wait(race_state* s, primitive p) {
    if (p == primitive::condition_variable) co_await s->m.lock();
    bool returned = false;
    try {
        co_await tandem::with_stop_token(s->stop.get_token(), wait_on(s, p));
        returned = true;
    } catch (const tandem::operation_cancelled&) {
    }
    (returned ? s->returned : s->cancelled).fetch_add(1);
    const bool holds_mutex =
        p == primitive::condition_variable || (p == primitive::mutex && returned);
    if (holds_mutex) {
        s->held_after = !s->m.try_lock();
        s->m.unlock();  // the wait's lock, or the one try_lock just took
    }
    if (p == primitive::semaphore && returned) s->sem.release();  // the permit it was handed
}

tandem::task<> wake_and_cancel(race_state* s, primitive p, bool wake_first) {
    // Same loop as the waiter: the stop request runs its cancel hook right here.
    if (wake_first) wake(s, p);
    s->stop.request_stop();
    if (!wake_first) wake(s, p);
    co_return;
}

/// Keeps its loop's thread busy (no posted item runs) until told to stop.
tandem::task<> block_loop(race_state* s) {
    s->loop_blocked = true;
    while (!s->unblock.load()) std::this_thread::yield();
    co_return;
}

}  // namespace

TEST_CASE(
    "a waiter woken before its cancellation arrives keeps what it was handed; one cancelled "
    "first takes nothing",
    "[sync][cancel]") {
    const primitive p = GENERATE(primitive::mutex, primitive::semaphore,
                                 primitive::condition_variable, primitive::event, primitive::latch);
    const bool wake_first = GENERATE(true, false);
    INFO(name_of(p) << ", " << (wake_first ? "woken, then cancelled" : "cancelled, then woken"));
    race_state s;
    if (p == primitive::mutex) REQUIRE(s.m.try_lock());
    {
        io_threads io(1);
        io.run(0, tandem::when_all(cancellable_wait(&s, p), wake_and_cancel(&s, p, wake_first)));
    }
    CHECK(s.returned.load() == (wake_first ? 1 : 0));
    CHECK(s.cancelled.load() == (wake_first ? 0 : 1));
    if (p == primitive::mutex || p == primitive::condition_variable) {
        if (wake_first || p == primitive::condition_variable) CHECK(s.held_after.load());
    }
    // Nothing lost, nothing taken twice: the mutex is free and the one permit is back.
    CHECK(s.m.try_lock());
    s.m.unlock();
    if (p == primitive::semaphore) CHECK(s.sem.available() == 1);
}

TEST_CASE(
    "a waiter woken from another thread keeps what it was handed when its cancellation is "
    "already on the way",
    "[sync][cancel]") {
    const primitive p = GENERATE(primitive::mutex, primitive::semaphore,
                                 primitive::condition_variable, primitive::event, primitive::latch);
    const bool wake_first = GENERATE(true, false);
    INFO(name_of(p) << ", " << (wake_first ? "woken, then cancelled" : "cancel requested first"));
    race_state s;
    if (p == primitive::mutex) REQUIRE(s.m.try_lock());
    {
        io_threads io(2);
        std::vector<tandem::task<>> waiter;
        waiter.push_back(cancellable_wait(&s, p));
        std::latch parked(1);
        io.start(1, park_all(std::move(waiter), &parked));
        parked.wait();
        // With loop 1 busy, the wake-up and the stop request both queue up for it: whatever
        // the order here, the waiter is handed its due before the cancellation reaches it.
        io.start(1, block_loop(&s));
        while (!s.loop_blocked.load()) std::this_thread::yield();
        if (wake_first) wake(&s, p);
        s.stop.request_stop();
        if (!wake_first) wake(&s, p);
        s.unblock = true;
        io.join();
    }
    CHECK(s.returned.load() == 1);
    CHECK(s.cancelled.load() == 0);
    if (p == primitive::mutex || p == primitive::condition_variable) CHECK(s.held_after.load());
    CHECK(s.m.try_lock());
    s.m.unlock();
    if (p == primitive::semaphore) CHECK(s.sem.available() == 1);
}

// ---- cancellation at random moments -----------------------------------------------

namespace {

struct chaos_state {
    tandem::mutex m;
    tandem::semaphore sem{3};
    tandem::condition_variable cv;
    tandem::event ev;
    tandem::latch never{1};  // counted down at the very end
    long counter = 0;        // guarded by m
    std::atomic<long> increments{0};
    std::atomic<int> in_m{0}, max_in_m{0};
    std::atomic<int> in_sem{0}, max_in_sem{0};
    std::atomic<int> not_held_after_cv{0};
    std::atomic<int> never_returned{0};
    std::atomic<long> got{0}, gave_up{0};  // waits that succeeded / were cancelled
    std::atomic<int> finished{0};
    canceller* stops = nullptr;
};

struct group_marker : std::runtime_error {
    group_marker() : std::runtime_error("cancels the group (expected)") {}
};

/// The guarded read-modify-write; a cancellation at the yield leaves the counter alone.
tandem::task<> chaos_rmw(chaos_state* c) {
    occupancy o(&c->in_m, &c->max_in_m);
    const long seen = c->counter;
    co_await tandem::yield();
    c->counter = seen + 1;
    c->increments.fetch_add(1);
}

tandem::task<> locked_rmw(chaos_state* c) {
    auto guard = co_await c->m.scoped();
    c->got.fetch_add(1);
    co_await chaos_rmw(c);
}

tandem::task<> permit_section(chaos_state* c) {
    co_await c->sem.acquire();
    c->got.fetch_add(1);
    struct give_back {
        tandem::semaphore* s;
        ~give_back() { s->release(); }
    } release{&c->sem};
    occupancy o(&c->in_sem, &c->max_in_sem);
    co_await tandem::sleep_for(0ns);
}

tandem::task<> fail_after(std::chrono::nanoseconds d) {
    co_await tandem::sleep_for(d);
    throw group_marker();
}

/// One random wait on one random primitive, cancelled (maybe) in one random way.
tandem::task<> chaos_step(chaos_state* c, std::mt19937* rng) {
    const auto d = random_us(*rng, 150);
    switch ((*rng)() % 13) {
        case 0: {  // timeout around lock(): on success this task owns the mutex
            try {
                co_await tandem::timeout(d, c->m.lock());
            } catch (const tandem::timed_out&) {
                c->gave_up.fetch_add(1);
                co_return;
            }
            c->got.fetch_add(1);
            tandem::mutex::scoped_lock adopt(c->m);
            co_await chaos_rmw(c);
            break;
        }
        case 1: {  // when_any: the lock (and what is done under it) against a timer
            co_await tandem::when_any(locked_rmw(c), tandem::sleep_for(d));
            break;
        }
        case 2: {  // timeout around acquire(): on success this task owns a permit
            try {
                co_await tandem::timeout(d, c->sem.acquire());
            } catch (const tandem::timed_out&) {
                c->gave_up.fetch_add(1);
                co_return;
            }
            c->got.fetch_add(1);
            {
                occupancy o(&c->in_sem, &c->max_in_sem);
                co_await tandem::yield();
            }
            c->sem.release();
            break;
        }
        case 3: {  // task_group: a failing sibling cancels the waits
            tandem::task_group g;
            g.spawn(locked_rmw(c));
            g.spawn(permit_section(c));
            g.spawn(permit_section(c));
            g.spawn(fail_after(d));
            try {
                co_await g.join();
            } catch (const group_marker&) {
            }
            break;
        }
        case 4: {  // with_stop_token, stopped from a plain thread
            try {
                co_await tandem::with_stop_token(c->stops->token(), locked_rmw(c));
            } catch (const tandem::operation_cancelled&) {
                c->gave_up.fetch_add(1);
            }
            break;
        }
        case 5: {
            try {
                co_await tandem::with_stop_token(c->stops->token(), permit_section(c));
            } catch (const tandem::operation_cancelled&) {
                c->gave_up.fetch_add(1);
            }
            break;
        }
        case 6: {  // condition variable with a timeout: the mutex is held afterwards
            auto guard = co_await c->m.scoped();
            try {
                co_await tandem::timeout(d, c->cv.wait(c->m));
                c->got.fetch_add(1);
            } catch (const tandem::timed_out&) {
                c->gave_up.fetch_add(1);
            }
            if (c->m.try_lock()) c->not_held_after_cv.fetch_add(1);  // (then the guard's)
            co_await chaos_rmw(c);
            break;
        }
        case 7: {  // condition variable stopped from a plain thread
            auto guard = co_await c->m.scoped();
            try {
                co_await tandem::with_stop_token(c->stops->token(), c->cv.wait(c->m));
                c->got.fetch_add(1);
            } catch (const tandem::operation_cancelled&) {
                c->gave_up.fetch_add(1);
            }
            if (c->m.try_lock()) c->not_held_after_cv.fetch_add(1);  // (then the guard's)
            break;
        }
        case 8: {  // wake-ups for the condition variable and the event
            const unsigned what = (*rng)() % 4;
            if (what == 0) c->cv.notify_one();
            if (what == 1) c->cv.notify_all();
            if (what == 2) c->ev.set();
            if (what == 3) c->ev.reset();
            co_await tandem::yield();
            break;
        }
        case 9: {  // event and latch waits that are always cut short or satisfied
            try {
                co_await tandem::timeout(d, c->ev.wait());
            } catch (const tandem::timed_out&) {
                c->gave_up.fetch_add(1);
            }
            try {
                co_await tandem::with_stop_token(c->stops->token(), c->never.wait());
                c->never_returned.fetch_add(1);  // it is counted down only at the end
            } catch (const tandem::operation_cancelled&) {
                c->gave_up.fetch_add(1);
            }
            break;
        }
        case 10: {  // when_any over scoped(): a losing guard that got the lock unlocks it
            auto won = co_await tandem::when_any(c->m.scoped(), tandem::sleep_for(d));
            if (won.index() == 0) {
                tandem::mutex::scoped_lock guard = std::move(std::get<0>(won));
                c->got.fetch_add(1);
                co_await chaos_rmw(c);
            } else {
                c->gave_up.fetch_add(1);
            }
            break;
        }
        case 11: {  // timeout around scoped()
            tandem::mutex::scoped_lock guard;
            try {
                guard = co_await tandem::timeout(d, c->m.scoped());
            } catch (const tandem::timed_out&) {
                c->gave_up.fetch_add(1);
                co_return;
            }
            c->got.fetch_add(1);
            co_await chaos_rmw(c);
            break;
        }
        default: {  // a plain, uncancelled lock
            co_await locked_rmw(c);
            break;
        }
    }
}

tandem::task<> chaos_worker(chaos_state* c, std::uint64_t seed, int steps) {
    std::mt19937 rng(static_cast<std::uint32_t>(seed));
    for (int i = 0; i < steps; ++i) co_await chaos_step(c, &rng);
    c->finished.fetch_add(1);
}

}  // namespace

TEST_CASE(
    "mutex, semaphore, condition_variable, event, latch: waits cancelled at random moments "
    "lose no lock, permit or wake-up",
    "[sync][cancel]") {
    const unsigned threads = GENERATE(1u, 2u);
    const std::uint64_t seed = test_seed();
    INFO("io threads: " << threads << ", seed " << seed << " (TANDEM_TEST_SEED=" << seed
                        << " replays it)");
    constexpr int workers = 32, steps = 1000;
    chaos_state c;
    {
        canceller stops(seed);
        c.stops = &stops;
        io_threads io(threads);
        for (int w = 0; w < workers; ++w) {
            io.start(unsigned(w), chaos_worker(&c, seed * 1000 + std::uint64_t(w), steps));
        }
        io.join();
    }
    c.never.count_down();
    CHECK(c.finished.load() == workers);
    CHECK(c.counter == c.increments.load());
    CHECK(c.max_in_m.load() == 1);
    CHECK(c.max_in_sem.load() <= 3);
    CHECK(c.not_held_after_cv.load() == 0);
    CHECK(c.never_returned.load() == 0);
    CHECK(c.m.try_lock());
    c.m.unlock();
    CHECK(c.sem.available() == 3);
    CHECK(c.got.load() > 0);
    CHECK(c.gave_up.load() > 0);
}

// ---- runtime shutdown -------------------------------------------------------------

namespace {

struct shutdown_state {
    tandem::mutex held;  // locked by the test: lock() waits
    tandem::mutex cv_mutex;
    tandem::semaphore sem{0};
    tandem::condition_variable cv;
    tandem::event ev;
    tandem::latch l{1};
    std::atomic<int> cancelled{0}, returned{0}, cv_not_held{0};
};

tandem::task<> wait_for_shutdown(shutdown_state* s, int kind) {
    bool locked_cv_mutex = false;
    try {
        switch (kind) {
            case 0:
                co_await s->held.lock();
                break;
            case 1:
                co_await s->sem.acquire();
                break;
            case 2:
                co_await s->cv_mutex.lock();
                locked_cv_mutex = true;
                co_await s->cv.wait(s->cv_mutex);
                break;
            case 3:
                co_await s->ev.wait();
                break;
            default:
                co_await s->l.wait();
                break;
        }
        s->returned.fetch_add(1);
    } catch (const tandem::operation_cancelled&) {
        s->cancelled.fetch_add(1);
    }
    if (locked_cv_mutex) {
        if (s->cv_mutex.try_lock()) s->cv_not_held.fetch_add(1);
        s->cv_mutex.unlock();
    }
}

}  // namespace

TEST_CASE(
    "destroying the runtime cancels the tasks waiting on every primitive and leaves no "
    "waiter queued",
    "[sync][cancel]") {
    const unsigned threads = GENERATE(1u, 2u);
    INFO("io threads: " << threads);
    constexpr int kinds = 5, per_kind = 4;
    // Declared before the runtime: they outlive it, and abort if a waiter is still queued.
    shutdown_state s;
    REQUIRE(s.held.try_lock());
    {
        io_threads io(threads);
        std::latch parked(threads);
        for (unsigned l = 0; l < threads; ++l) {
            std::vector<tandem::task<>> waiters;
            for (int k = 0; k < kinds * per_kind; ++k)
                waiters.push_back(wait_for_shutdown(&s, k % kinds));
            io.start(l, park_all(std::move(waiters), &parked));
        }
        parked.wait();
    }  // no join: the runtime's destructor cancels them and waits for them
    CHECK(s.cancelled.load() == kinds * per_kind * int(threads));
    CHECK(s.returned.load() == 0);
    CHECK(s.cv_not_held.load() == 0);
    CHECK(s.sem.available() == 0);
    CHECK(s.cv_mutex.try_lock());
    s.cv_mutex.unlock();
    s.held.unlock();
}

// ---- programmer errors abort --------------------------------------------------------

namespace {

constexpr const char* child_env = "TANDEM_SYNC_TEST_CHILD";

struct misuse {
    const char* name;
    const char* message;  // what the abort says
};

constexpr misuse misuses[] = {
    {"mutex_destroyed", "tandem::mutex destroyed while tasks wait on it"},
    {"semaphore_destroyed", "tandem::semaphore destroyed while tasks wait on it"},
    {"event_destroyed", "tandem::event destroyed while tasks wait on it"},
    {"condition_variable_destroyed", "tandem::condition_variable destroyed while tasks wait on it"},
    {"latch_destroyed", "tandem::latch destroyed while tasks wait on it"},
    {"unlock_unlocked", "tandem::mutex::unlock on a mutex that is not locked"},
    {"cv_wait_unlocked", "tandem::mutex::unlock on a mutex that is not locked"},
    {"latch_below_zero", "tandem::latch::count_down below zero"},
    {"latch_negative", "tandem::latch with a negative count"},
    {"semaphore_negative", "tandem::semaphore with a negative count"},
    {"release_negative", "tandem::semaphore::release with a negative count"},
};

/// Starts `t` as a root of the current loop and lets it run up to its first suspension.
tandem::task<> spawn_and_let_run(tandem::task<> t) {
    tandem::runtime::current()->spawn(std::move(t));
    co_await tandem::yield();
    co_await tandem::yield();
}

tandem::task<> lock_then_wait(tandem::mutex* m, tandem::condition_variable* cv) {
    co_await m->lock();
    co_await cv->wait(*m);
}

tandem::task<> wait_without_lock(tandem::mutex* m, tandem::condition_variable* cv) {
    co_await cv->wait(*m);  // the caller must hold m: a programmer error
}

/// The misuse named `what`; returns only if it did not abort.
void commit_misuse(const std::string& what) {
    io_threads io(1);
    // Destroyed explicitly below, or leaked on purpose (the process aborts anyway).
    auto* m = new tandem::mutex;
    if (what == "mutex_destroyed") {
        REQUIRE(m->try_lock());
        io.run(0, spawn_and_let_run(lock_only(m)));
        delete m;
    } else if (what == "semaphore_destroyed") {
        auto* sem = new tandem::semaphore(0);
        io.run(0, spawn_and_let_run(sem->acquire()));
        delete sem;
    } else if (what == "event_destroyed") {
        auto* ev = new tandem::event;
        io.run(0, spawn_and_let_run(ev->wait()));
        delete ev;
    } else if (what == "condition_variable_destroyed") {
        auto* cv = new tandem::condition_variable;
        io.run(0, spawn_and_let_run(lock_then_wait(m, cv)));
        delete cv;
    } else if (what == "latch_destroyed") {
        auto* l = new tandem::latch(1);
        io.run(0, spawn_and_let_run(l->wait()));
        delete l;
    } else if (what == "unlock_unlocked") {
        m->unlock();
    } else if (what == "cv_wait_unlocked") {
        auto* cv = new tandem::condition_variable;
        io.run(0, spawn_and_let_run(wait_without_lock(m, cv)));
    } else if (what == "latch_below_zero") {
        tandem::latch l(2);
        l.count_down(3);
    } else if (what == "latch_negative") {
        tandem::latch l(-1);
    } else if (what == "semaphore_negative") {
        tandem::semaphore sem(-1);
    } else if (what == "release_negative") {
        tandem::semaphore sem(1);
        sem.release(-1);
    }
}

/// Runs the hidden child test case for `what` (sync_support.hpp).
int run_child(const char* what, std::string* output) {
    return run_child_case("[child_sync_misuse]", child_env, what, output);
}

}  // namespace

TEST_CASE("child: one misuse of a primitive", "[.child_sync_misuse]") {
    const char* what = std::getenv(child_env);
    if (what == nullptr) return;  // only when started by the test below
    for (int sig : {SIGABRT, SIGSEGV}) std::signal(sig, SIG_DFL);
    ::dup2(STDOUT_FILENO, STDERR_FILENO);  // the parent reads the message on our stdout
    commit_misuse(what);
    std::printf("the misuse \"%s\" did not abort\n", what);
    std::fflush(stdout);
    ::_exit(0);
}

TEST_CASE(
    "programmer errors abort with a message: a primitive destroyed with waiters, unlocking an "
    "unlocked mutex, negative counts",
    "[sync]") {
    const misuse m = GENERATE(from_range(std::begin(misuses), std::end(misuses)));
    INFO("misuse: " << m.name);
    std::string output;
    const int status = run_child(m.name, &output);
    INFO("child output: " << output);
    REQUIRE(WIFSIGNALED(status));
    CHECK(WTERMSIG(status) == SIGABRT);
    CHECK(output.find(m.message) != std::string::npos);
}
