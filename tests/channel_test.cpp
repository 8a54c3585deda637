// SPDX-License-Identifier: MIT
// channel<T> (channel.hpp): every item delivered exactly once with several producers and
// consumers, FIFO order, backpressure, capacity 0 as a rendezvous, close semantics,
// cancellation that loses nothing, on one and on two io threads; and a mixed stress test of
// every coordination primitive at once (the one TSan runs in CI).
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
#include <optional>
#include <random>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

using namespace std::chrono_literals;

static_assert(!std::is_copy_constructible_v<tandem::channel<int>>);
static_assert(std::is_same_v<decltype(std::declval<tandem::channel<int>&>().receive()),
                             tandem::task<std::optional<int>>>);
static_assert(std::is_same_v<decltype(std::declval<tandem::channel<std::string>&>().send("")),
                             tandem::task<>>);
static_assert(std::is_base_of_v<tandem::error, tandem::channel_closed>);

using namespace sync_support;

namespace {

struct group_marker : std::runtime_error {
    group_marker() : std::runtime_error("cancels the group (expected)") {}
};

tandem::task<> fail_after(std::chrono::nanoseconds d) {
    co_await tandem::sleep_for(d);
    throw group_marker();
}

/// Items with an id inside: a plain int, a string on the heap (longer than the small-string
/// buffer: a move hands the buffer over), and a move-only pointer.
template <class T>
struct item;

template <>
struct item<int> {
    static int make(int id) { return id; }
    static int id(const int& v) { return v; }
};

template <>
struct item<std::string> {
    static constexpr std::size_t prefix = 24;
    static std::string make(int id) { return std::string(prefix, '.') + std::to_string(id); }
    static int id(const std::string& v) {
        if (v.size() <= prefix) return -1;  // moved-from or damaged
        return std::stoi(v.substr(prefix));
    }
};

template <>
struct item<std::unique_ptr<int>> {
    static std::unique_ptr<int> make(int id) { return std::make_unique<int>(id); }
    static int id(const std::unique_ptr<int>& v) { return v ? *v : -1; }
};

std::vector<int> iota_vector(int n) {
    std::vector<int> v;
    for (int i = 0; i < n; ++i) v.push_back(i);
    return v;
}

}  // namespace

// ---- every item exactly once ----------------------------------------------------------

namespace {

template <class T>
struct delivery_state {
    delivery_state(std::size_t capacity, int producers, int per_producer)
        : ch(capacity),
          producers_left(producers),
          per(per_producer),
          received(std::size_t(producers * per_producer)) {}
    tandem::channel<T> ch;
    std::atomic<int> producers_left;
    const int per;
    std::vector<std::atomic<int>> received;
    std::atomic<int> bad_items{0};
    std::atomic<int> out_of_order{0};  // a consumer saw a producer's items out of order
    std::atomic<int> wrong_loop{0};
};

template <class T>
tandem::task<> producer(delivery_state<T>* s, int index) {
    const loop_ptr home = tandem::detail::current_loop();
    for (int i = 0; i < s->per; ++i) {
        co_await s->ch.send(item<T>::make(index * s->per + i));
        if (tandem::detail::current_loop() != home) s->wrong_loop.fetch_add(1);
    }
    if (s->producers_left.fetch_sub(1) == 1) s->ch.close();  // the last one closes
}

template <class T>
tandem::task<> consumer(delivery_state<T>* s, int producers) {
    const loop_ptr home = tandem::detail::current_loop();
    // Items from one producer reach one consumer in the order they were sent.
    std::vector<int> last(std::size_t(producers), -1);
    while (auto v = co_await s->ch.receive()) {
        if (tandem::detail::current_loop() != home) s->wrong_loop.fetch_add(1);
        const int id = item<T>::id(*v);
        if (id < 0 || std::size_t(id) >= s->received.size()) {
            s->bad_items.fetch_add(1);
            continue;
        }
        s->received[std::size_t(id)].fetch_add(1);
        int& seen = last[std::size_t(id / s->per)];
        if (id <= seen) s->out_of_order.fetch_add(1);
        seen = id;
    }
}

}  // namespace

TEMPLATE_TEST_CASE(
    "channel: several producers and consumers on one or two io threads deliver every item "
    "exactly once",
    "[channel]", int, std::string, std::unique_ptr<int>) {
    const std::size_t capacity = GENERATE(0u, 1u, 8u, 1024u);
    const unsigned threads = GENERATE(1u, 2u);
    INFO("capacity " << capacity << ", io threads " << threads);
    constexpr int producers = 4, consumers = 3, per_producer = 1000;
    delivery_state<TestType> s(capacity, producers, per_producer);
    {
        io_threads io(threads);
        for (int p = 0; p < producers; ++p) io.start(unsigned(p), producer(&s, p));
        for (int c = 0; c < consumers; ++c) io.start(unsigned(c + 1), consumer(&s, producers));
        io.join();
    }
    int missing = 0, duplicated = 0;
    for (auto& n : s.received) {
        missing += n.load() == 0;
        duplicated += n.load() > 1;
    }
    CHECK(missing == 0);
    CHECK(duplicated == 0);
    CHECK(s.bad_items.load() == 0);
    CHECK(s.out_of_order.load() == 0);
    CHECK(s.wrong_loop.load() == 0);
    CHECK(s.ch.is_closed());
    CHECK(s.ch.size() == 0);
    CHECK(s.ch.capacity() == capacity);
}

namespace {

tandem::task<> send_sequence(tandem::channel<std::string>* ch, int n) {
    for (int i = 0; i < n; ++i) co_await ch->send(item<std::string>::make(i));
    ch->close();
}

tandem::task<> receive_all(tandem::channel<std::string>* ch, std::vector<int>* out) {
    while (auto v = co_await ch->receive()) out->push_back(item<std::string>::id(*v));
}

}  // namespace

TEST_CASE("channel: items from a single producer come out in the order they went in", "[channel]") {
    const std::size_t capacity = GENERATE(0u, 1u, 8u, 1024u);
    const unsigned threads = GENERATE(1u, 2u);
    INFO("capacity " << capacity << ", io threads " << threads);
    constexpr int n = 3000;
    tandem::channel<std::string> ch(capacity);
    std::vector<int> got;
    {
        io_threads io(threads);
        io.start(0, send_sequence(&ch, n));
        io.start(threads - 1, receive_all(&ch, &got));
        io.join();
    }
    CHECK(got == iota_vector(n));
}

namespace {

struct queue_order_state {
    explicit queue_order_state(std::size_t capacity) : ch(capacity) {}
    tandem::channel<int> ch;
    std::vector<int> got = std::vector<int>(10, -1);  // by receiver; each writes its own slot
};

tandem::task<> numbered_receiver(queue_order_state* s, int id) {
    auto v = co_await s->ch.receive();
    s->got[std::size_t(id)] = v ? *v : -2;
}

tandem::task<> numbered_sender(queue_order_state* s, int id) {
    co_await s->ch.send(id);
}

/// Parks waiters 0-4 on the last io thread, then waiters 5-9 on the first.
template <class Make>
void park_in_order(io_threads& io, queue_order_state* s, Make make) {
    for (int group = 0; group < 2; ++group) {
        std::vector<tandem::task<>> waiters;
        for (int id = group * 5; id < group * 5 + 5; ++id) waiters.push_back(make(s, id));
        std::latch parked(1);
        io.start(group == 0 ? io.count() - 1 : 0, park_all(std::move(waiters), &parked));
        parked.wait();
    }
}

}  // namespace

TEST_CASE("channel: waiting receivers and waiting senders are served first come, first served",
          "[channel]") {
    const unsigned threads = GENERATE(1u, 2u);
    INFO("io threads " << threads);
    SECTION("receivers") {
        const std::size_t capacity = GENERATE(0u, 4u);
        INFO("capacity " << capacity);
        queue_order_state s(capacity);
        io_threads io(threads);
        park_in_order(io, &s, &numbered_receiver);
        for (int i = 0; i < 10; ++i) {
            int v = i;
            CHECK(s.ch.try_send(v));  // straight to the longest-waiting receiver
        }
        CHECK(s.ch.size() == 0);
        io.join();
        CHECK(s.got == iota_vector(10));
    }
    SECTION("senders") {
        const std::size_t capacity = GENERATE(0u, 1u);
        INFO("capacity " << capacity);
        queue_order_state s(capacity);
        std::vector<int> expected;
        if (capacity == 1) {
            int first = 100;
            REQUIRE(s.ch.try_send(first));
            expected.push_back(100);
        }
        for (int i = 0; i < 10; ++i) expected.push_back(i);
        io_threads io(threads);
        park_in_order(io, &s, &numbered_sender);
        std::vector<int> received;
        for (std::size_t i = 0; i < expected.size(); ++i) {
            auto v = s.ch.try_receive();  // a waiting sender refills at once: never empty here
            received.push_back(v ? *v : -1);
        }
        io.join();
        CHECK(received == expected);
        CHECK(s.ch.size() == 0);
    }
}

// ---- backpressure and rendezvous ----------------------------------------------------

namespace {

struct backpressure_state {
    explicit backpressure_state(std::size_t capacity) : ch(capacity) {}
    tandem::channel<std::unique_ptr<int>> ch;
    int sent = 0;  // one loop
    std::size_t size_when_full = 99, sent_when_full = 99;
    std::size_t sent_right_after_receive = 99, size_right_after_receive = 99;
    std::size_t sent_after_yield = 99, size_after_yield = 99;
    int first_received = -1;
    std::vector<int> rest;
};

tandem::task<> send_n(backpressure_state* s, int n) {
    for (int i = 0; i < n; ++i) {
        co_await s->ch.send(std::make_unique<int>(i));
        ++s->sent;
    }
}

/// Runs once the sender is stuck on the full channel.
tandem::task<> look_then_receive(backpressure_state* s, int n) {
    s->size_when_full = s->ch.size();
    s->sent_when_full = std::size_t(s->sent);
    auto v = co_await s->ch.receive();
    s->first_received = v ? **v : -1;
    s->sent_right_after_receive = std::size_t(s->sent);  // the sender is not resumed inline
    s->size_right_after_receive = s->ch.size();
    co_await tandem::yield();
    s->sent_after_yield = std::size_t(s->sent);
    s->size_after_yield = s->ch.size();
    for (int i = 1; i < n; ++i) {
        auto w = co_await s->ch.receive();
        s->rest.push_back(w ? **w : -1);
    }
}

}  // namespace

TEST_CASE(
    "channel: a send on a full channel waits (size() == capacity) until a receive makes room; "
    "capacity 0 waits for a receiver",
    "[channel]") {
    const std::size_t capacity = GENERATE(0u, 1u, 2u, 8u);
    INFO("capacity " << capacity);
    const int n = int(capacity) + 1;  // the last send has to wait
    backpressure_state s(capacity);
    io_threads io(1);
    io.run(0, tandem::when_all(send_n(&s, n), look_then_receive(&s, n)));
    CHECK(s.size_when_full == capacity);
    CHECK(s.sent_when_full == capacity);
    CHECK(s.first_received == 0);
    CHECK(s.sent_right_after_receive == capacity);
    // The waiting sender's item took the freed slot (capacity 0: was taken straight).
    CHECK(s.size_right_after_receive == capacity);
    CHECK(s.sent_after_yield == capacity + 1);
    CHECK(s.size_after_yield == capacity);
    std::vector<int> expected;
    for (int i = 1; i < n; ++i) expected.push_back(i);
    CHECK(s.rest == expected);
    CHECK(s.ch.size() == 0);
}

namespace {

struct cross_backpressure_state {
    explicit cross_backpressure_state(std::size_t capacity) : ch(capacity) {}
    tandem::channel<int> ch;
    std::atomic<int> sent{0};
};

tandem::task<> send_counted(cross_backpressure_state* s, int n) {
    for (int i = 0; i < n; ++i) {
        co_await s->ch.send(i);
        s->sent.fetch_add(1);
    }
}

}  // namespace

TEST_CASE(
    "channel: a sender on an io thread blocked by a full channel is released by try_receive on "
    "a plain thread",
    "[channel]") {
    const std::size_t capacity = GENERATE(1u, 4u);
    INFO("capacity " << capacity);
    constexpr int n = 50;
    cross_backpressure_state s(capacity);
    io_threads io(2);
    io.start(1, send_counted(&s, n));
    std::vector<int> got;
    while (int(got.size()) < n) {
        if (s.ch.size() == capacity) {
            // Full: nothing else can have been sent beyond what is queued.
            CHECK(s.sent.load() <= int(got.size() + capacity));
        }
        if (auto v = s.ch.try_receive()) {
            got.push_back(*v);
        } else {
            std::this_thread::yield();
        }
    }
    io.join();
    CHECK(got == iota_vector(n));
    CHECK(s.sent.load() == n);
}

namespace {

struct rendezvous_state {
    tandem::channel<std::string> ch{0};
    bool try_send_alone = true;
    bool try_send_to_waiting = false;
    std::optional<std::string> try_receive_alone{"x"};
    std::optional<std::string> try_receive_from_waiting;
    std::string kept;  // the value a failed try_send left alone
    std::optional<std::string> received_by_waiter;
    bool sender_done = false;
};

tandem::task<> waiting_receiver(rendezvous_state* s) {
    s->received_by_waiter = co_await s->ch.receive();
}

tandem::task<> waiting_sender(rendezvous_state* s) {
    co_await s->ch.send(item<std::string>::make(7));
    s->sender_done = true;
}

tandem::task<> try_against_waiters(rendezvous_state* s) {
    // Runs once the receiver (first child) is queued.
    std::string v = item<std::string>::make(5);
    s->try_send_to_waiting = s->ch.try_send(v);
    co_return;
}

tandem::task<> try_alone(rendezvous_state* s) {
    std::string v = item<std::string>::make(3);
    s->try_send_alone = s->ch.try_send(v);
    s->kept = v;
    s->try_receive_alone = s->ch.try_receive();
    co_return;
}

tandem::task<> try_receive_from_sender(rendezvous_state* s) {
    // Runs once the sender (first child) is queued.
    s->try_receive_from_waiting = s->ch.try_receive();
    co_return;
}

}  // namespace

TEST_CASE(
    "channel: capacity 0 is a rendezvous: try_send and try_receive succeed only against a "
    "waiting partner",
    "[channel]") {
    rendezvous_state s;
    io_threads io(1);
    io.run(0, try_alone(&s));
    CHECK_FALSE(s.try_send_alone);
    CHECK(s.kept == item<std::string>::make(3));  // untouched
    CHECK_FALSE(s.try_receive_alone.has_value());
    io.run(0, tandem::when_all(waiting_receiver(&s), try_against_waiters(&s)));
    CHECK(s.try_send_to_waiting);
    CHECK(s.received_by_waiter == item<std::string>::make(5));
    io.run(0, tandem::when_all(waiting_sender(&s), try_receive_from_sender(&s)));
    CHECK(s.try_receive_from_waiting == item<std::string>::make(7));
    CHECK(s.sender_done);
    CHECK(s.ch.size() == 0);
}

TEST_CASE(
    "channel: try_send on a full channel returns false and leaves the value intact; "
    "try_receive on an empty one is nullopt",
    "[channel]") {
    tandem::channel<std::unique_ptr<int>> ch(2);
    CHECK(ch.capacity() == 2);
    CHECK_FALSE(ch.try_receive().has_value());
    auto a = std::make_unique<int>(1);
    auto b = std::make_unique<int>(2);
    auto c = std::make_unique<int>(3);
    CHECK(ch.try_send(a));
    CHECK(a == nullptr);  // moved into the channel
    CHECK(ch.try_send(b));
    CHECK(ch.size() == 2);
    CHECK_FALSE(ch.try_send(c));
    REQUIRE(c != nullptr);
    CHECK(*c == 3);
    CHECK(ch.size() == 2);
    auto first = ch.try_receive();
    REQUIRE(first.has_value());
    CHECK(**first == 1);
    CHECK(ch.try_send(c));
    auto second = ch.try_receive();
    auto third = ch.try_receive();
    REQUIRE(second.has_value());
    REQUIRE(third.has_value());
    CHECK(**second == 2);
    CHECK(**third == 3);
    CHECK_FALSE(ch.try_receive().has_value());
    CHECK_FALSE(ch.is_closed());

    tandem::channel<std::string> strings(1);
    std::string s1 = item<std::string>::make(1), s2 = item<std::string>::make(2);
    CHECK(strings.try_send(s1));
    CHECK_FALSE(strings.try_send(s2));
    CHECK(s2 == item<std::string>::make(2));
}

// ---- close ----------------------------------------------------------------------------

namespace {

struct close_state {
    explicit close_state(std::size_t capacity) : ch(capacity) {}
    tandem::channel<std::unique_ptr<int>> ch;
    std::atomic<int> got_nullopt{0};
    std::atomic<int> got_item{0};
    std::atomic<int> send_closed{0};
    std::atomic<int> send_returned{0};
    std::atomic<int> wrong_loop{0};
};

tandem::task<> receive_expecting_close(close_state* s) {
    const loop_ptr home = tandem::detail::current_loop();
    auto v = co_await s->ch.receive();
    if (tandem::detail::current_loop() != home) s->wrong_loop.fetch_add(1);
    (v ? s->got_item : s->got_nullopt).fetch_add(1);
}

tandem::task<> send_expecting_close(close_state* s, int id) {
    const loop_ptr home = tandem::detail::current_loop();
    try {
        co_await s->ch.send(std::make_unique<int>(id));
        s->send_returned.fetch_add(1);
    } catch (const tandem::channel_closed&) {
        s->send_closed.fetch_add(1);
    }
    if (tandem::detail::current_loop() != home) s->wrong_loop.fetch_add(1);
}

tandem::task<> close_channel(close_state* s) {
    s->ch.close();
    co_return;
}

/// -1 for nullopt.
tandem::task<int> receive_one(close_state* s) {
    auto v = co_await s->ch.receive();
    co_return v&&* v ? **v : -1;
}

}  // namespace

TEST_CASE("channel: close() gives every waiting receiver nullopt, on each io thread", "[channel]") {
    const unsigned threads = GENERATE(1u, 2u);
    const bool from_plain_thread = GENERATE(false, true);
    const std::size_t capacity = GENERATE(0u, 4u);
    INFO("io threads " << threads << ", capacity " << capacity
                       << ", closed from a plain thread: " << from_plain_thread);
    constexpr int per_loop = 6;
    close_state s(capacity);
    io_threads io(threads);
    std::latch parked(threads);
    for (unsigned l = 0; l < threads; ++l) {
        std::vector<tandem::task<>> receivers;
        for (int i = 0; i < per_loop; ++i) receivers.push_back(receive_expecting_close(&s));
        io.start(l, park_all(std::move(receivers), &parked));
    }
    parked.wait();
    if (from_plain_thread) {
        std::thread([&s] { s.ch.close(); }).join();
    } else {
        io.run(0, close_channel(&s));
    }
    io.join();
    CHECK(s.got_nullopt.load() == per_loop * int(threads));
    CHECK(s.got_item.load() == 0);
    CHECK(s.wrong_loop.load() == 0);
    CHECK(s.ch.is_closed());
}

TEST_CASE(
    "channel: close() makes every waiting sender throw channel_closed; what was queued is "
    "still received, then nullopt",
    "[channel]") {
    const unsigned threads = GENERATE(1u, 2u);
    const std::size_t capacity = GENERATE(0u, 1u, 3u);
    INFO("io threads " << threads << ", capacity " << capacity);
    constexpr int per_loop = 5;
    close_state s(capacity);
    for (std::size_t i = 0; i < capacity; ++i) {
        auto v = std::make_unique<int>(1000 + int(i));
        REQUIRE(s.ch.try_send(v));
    }
    io_threads io(threads);
    std::latch parked(threads);
    for (unsigned l = 0; l < threads; ++l) {
        std::vector<tandem::task<>> senders;
        for (int i = 0; i < per_loop; ++i) senders.push_back(send_expecting_close(&s, i));
        io.start(l, park_all(std::move(senders), &parked));
    }
    parked.wait();
    CHECK(s.ch.size() == capacity);
    std::thread([&s] { s.ch.close(); }).join();
    io.join();
    CHECK(s.send_closed.load() == per_loop * int(threads));
    CHECK(s.send_returned.load() == 0);
    CHECK(s.wrong_loop.load() == 0);
    // The waiting senders' items were never queued; the earlier ones drain in order.
    CHECK(s.ch.size() == capacity);
    for (std::size_t i = 0; i < capacity; ++i)
        CHECK(io.run(unsigned(i), receive_one(&s)) == 1000 + int(i));
    CHECK(io.run(0, receive_one(&s)) == -1);  // closed and drained: nullopt, at once
    CHECK(io.run(1, receive_one(&s)) == -1);
    CHECK_FALSE(s.ch.try_receive().has_value());
    CHECK(s.ch.is_closed());
}

namespace {

struct after_close_report {
    std::vector<int> drained;
    int nullopts = 0;
    bool send_threw = false;
    bool try_send_threw = false;
    bool value_intact = false;
};

tandem::task<after_close_report> use_after_close(tandem::channel<std::unique_ptr<int>>* ch) {
    after_close_report r;
    for (int i = 0; i < 5; ++i) co_await ch->send(std::make_unique<int>(i));
    ch->close();
    ch->close();  // idempotent
    try {
        co_await ch->send(std::make_unique<int>(99));
    } catch (const tandem::channel_closed&) {
        r.send_threw = true;
    }
    auto v = std::make_unique<int>(98);
    try {
        (void)ch->try_send(v);
    } catch (const tandem::channel_closed&) {
        r.try_send_threw = true;
    }
    r.value_intact = v != nullptr && *v == 98;
    for (int i = 0; i < 7; ++i) {
        auto got = co_await ch->receive();
        if (got) {
            r.drained.push_back(**got);
        } else {
            ++r.nullopts;
        }
    }
    co_return r;
}

}  // namespace

TEST_CASE(
    "channel: after close(), send and try_send throw channel_closed, and receivers drain the "
    "queue before they get nullopt",
    "[channel]") {
    tandem::channel<std::unique_ptr<int>> ch(8);
    io_threads io(1);
    const after_close_report r = io.run(0, use_after_close(&ch));
    CHECK(r.send_threw);
    CHECK(r.try_send_threw);
    CHECK(r.value_intact);
    CHECK(r.drained == iota_vector(5));
    CHECK(r.nullopts == 2);
    CHECK(ch.is_closed());
    CHECK_FALSE(ch.try_receive().has_value());
}

// ---- a hand-over and a cancellation that meet --------------------------------------

namespace {

struct race_state {
    explicit race_state(std::size_t capacity) : ch(capacity) {}
    tandem::channel<std::unique_ptr<int>> ch;
    std::stop_source stop;
    std::atomic<int> returned{0}, cancelled{0};
    std::atomic<int> received_id{-1};
    std::optional<std::unique_ptr<int>> taken;  // what the other side got, if anything
    bool try_send_result = false;
    std::unique_ptr<int> left_with_sender;  // what a failed try_send left alone
    std::atomic<bool> loop_blocked{false}, unblock{false};
};

tandem::task<> cancellable_receive(race_state* s) {
    try {
        auto v = co_await tandem::with_stop_token(s->stop.get_token(), s->ch.receive());
        s->received_id = v && *v ? **v : -2;
        s->returned.fetch_add(1);
    } catch (const tandem::operation_cancelled&) {
        s->cancelled.fetch_add(1);
    }
}

tandem::task<> cancellable_send(race_state* s, int id) {
    try {
        co_await tandem::with_stop_token(s->stop.get_token(),
                                         s->ch.send(std::make_unique<int>(id)));
        s->returned.fetch_add(1);
    } catch (const tandem::operation_cancelled&) {
        s->cancelled.fetch_add(1);
    }
}

/// The other side of the hand-over: try_send to a waiting receiver, or try_receive from a
/// waiting sender (for a full channel: the oldest item, and the sender's item takes its slot).
void hand_over(race_state* s, bool to_receiver) {
    if (to_receiver) {
        auto v = std::make_unique<int>(42);
        s->try_send_result = s->ch.try_send(v);
        s->left_with_sender = std::move(v);
    } else {
        s->taken = s->ch.try_receive();
    }
}

tandem::task<> hand_over_and_cancel(race_state* s, bool to_receiver, bool hand_first) {
    if (hand_first) hand_over(s, to_receiver);
    s->stop.request_stop();  // same loop: the cancel hook runs right here
    if (!hand_first) hand_over(s, to_receiver);
    co_return;
}

tandem::task<> block_loop(race_state* s) {
    s->loop_blocked = true;
    while (!s->unblock.load()) std::this_thread::yield();
    co_return;
}

/// What is left in the channel, in order.
std::vector<int> drain(tandem::channel<std::unique_ptr<int>>& ch) {
    std::vector<int> out;
    while (auto v = ch.try_receive()) out.push_back(*v ? **v : -1);
    return out;
}

}  // namespace

TEST_CASE(
    "channel: a receiver handed an item before its cancellation arrives returns it; one "
    "cancelled first takes nothing",
    "[channel][cancel]") {
    const std::size_t capacity = GENERATE(0u, 4u);
    const bool hand_first = GENERATE(true, false);
    const unsigned threads = GENERATE(1u, 2u);
    INFO("capacity " << capacity << (hand_first ? ", handed over first" : ", cancelled first")
                     << ", io threads " << threads);
    race_state s(capacity);
    {
        io_threads io(threads);
        if (threads == 1) {
            io.run(0, tandem::when_all(cancellable_receive(&s),
                                       hand_over_and_cancel(&s, true, hand_first)));
        } else {
            std::vector<tandem::task<>> receiver;
            receiver.push_back(cancellable_receive(&s));
            std::latch parked(1);
            io.start(1, park_all(std::move(receiver), &parked));
            parked.wait();
            io.start(1, block_loop(&s));  // both the hand-over and the stop queue up for it
            while (!s.loop_blocked.load()) std::this_thread::yield();
            if (hand_first) hand_over(&s, true);
            s.stop.request_stop();
            if (!hand_first) hand_over(&s, true);
            s.unblock = true;
            io.join();
        }
    }
    // On one loop the order is what it says; across threads the receiver is still queued
    // when the stop request is made, so it is handed the item either way.
    const bool handed = hand_first || threads == 2;
    CHECK(s.returned.load() == (handed ? 1 : 0));
    CHECK(s.cancelled.load() == (handed ? 0 : 1));
    if (handed) {
        CHECK(s.try_send_result);
        CHECK(s.left_with_sender == nullptr);
        CHECK(s.received_id.load() == 42);
        CHECK(drain(s.ch).empty());
    } else {
        // Nobody waits any more: with room the item is queued, a rendezvous refuses it.
        CHECK(s.try_send_result == (capacity > 0));
        if (capacity > 0) {
            CHECK(s.left_with_sender == nullptr);
            CHECK(drain(s.ch) == std::vector<int>{42});
        } else {
            REQUIRE(s.left_with_sender != nullptr);
            CHECK(*s.left_with_sender == 42);
        }
    }
}

TEST_CASE(
    "channel: a sender whose item was taken before its cancellation arrives returns normally; "
    "one cancelled first queues nothing",
    "[channel][cancel]") {
    const std::size_t capacity = GENERATE(0u, 1u);
    const bool hand_first = GENERATE(true, false);
    const unsigned threads = GENERATE(1u, 2u);
    INFO("capacity " << capacity << (hand_first ? ", taken first" : ", cancelled first")
                     << ", io threads " << threads);
    race_state s(capacity);
    if (capacity == 1) {
        auto first = std::make_unique<int>(1);
        REQUIRE(s.ch.try_send(first));  // full: the sender below has to wait
    }
    {
        io_threads io(threads);
        if (threads == 1) {
            io.run(0, tandem::when_all(cancellable_send(&s, 7),
                                       hand_over_and_cancel(&s, false, hand_first)));
        } else {
            std::vector<tandem::task<>> sender;
            sender.push_back(cancellable_send(&s, 7));
            std::latch parked(1);
            io.start(1, park_all(std::move(sender), &parked));
            parked.wait();
            io.start(1, block_loop(&s));
            while (!s.loop_blocked.load()) std::this_thread::yield();
            if (hand_first) hand_over(&s, false);
            s.stop.request_stop();
            if (!hand_first) hand_over(&s, false);
            s.unblock = true;
            io.join();
        }
    }
    const bool taken = hand_first || threads == 2;
    CHECK(s.returned.load() == (taken ? 1 : 0));
    CHECK(s.cancelled.load() == (taken ? 0 : 1));
    const int first_out = capacity == 1 ? 1 : (taken ? 7 : -1);
    if (first_out < 0) {
        CHECK_FALSE(s.taken.has_value());
    } else {
        REQUIRE(s.taken.has_value());
        REQUIRE(*s.taken != nullptr);
        CHECK(**s.taken == first_out);
    }
    // A full channel's freed slot went to the waiting sender's item, unless it had left.
    const std::vector<int> rest = drain(s.ch);
    if (capacity == 1 && taken) {
        CHECK(rest == std::vector<int>{7});
    } else {
        CHECK(rest.empty());
    }
}

// ---- item lifetime --------------------------------------------------------------------

namespace {

/// Counts live instances; no default constructor (a channel must not need one).
class counted {
public:
    counted(int id, std::atomic<int>* live) : id_(id), live_(live) { live_->fetch_add(1); }
    counted(counted&& o) noexcept : id_(o.id_), live_(o.live_) { live_->fetch_add(1); }
    counted& operator=(counted&&) = delete;
    ~counted() { live_->fetch_sub(1); }
    int id() const { return id_; }

private:
    int id_;
    std::atomic<int>* live_;
};

tandem::task<> send_counted_items(tandem::channel<counted>* ch, std::atomic<int>* live, int n) {
    for (int i = 0; i < n; ++i) co_await ch->send(counted(i, live));
}

}  // namespace

TEST_CASE("channel: items still queued when a channel is destroyed are destroyed with it",
          "[channel]") {
    std::atomic<int> live{0};
    {
        tandem::channel<counted> ch(8);
        io_threads io(1);
        io.run(0, send_counted_items(&ch, &live, 5));
        CHECK(live.load() == 5);  // only the queued items: nothing else kept a copy
        auto one = ch.try_receive();
        REQUIRE(one.has_value());
        CHECK(one->id() == 0);
        CHECK(live.load() == 5);
        one.reset();
        CHECK(live.load() == 4);
        ch.close();
        CHECK(live.load() == 4);  // closing keeps them for the receivers
    }
    CHECK(live.load() == 0);
}

// ---- cancellation at random moments ---------------------------------------------------

namespace {

struct chaos_channel {
    chaos_channel(std::size_t capacity, int items)
        : ch(capacity), delivered(std::size_t(items)), received(std::size_t(items)) {}
    tandem::channel<std::unique_ptr<int>> ch;
    std::vector<std::atomic<int>> delivered;  // the send reported success
    std::vector<std::atomic<int>> received;
    std::atomic<int> producers_left{0};
    std::atomic<int> bad_items{0};
    std::atomic<long> cancelled{0};
    std::atomic<int> finished{0};
    canceller* stops = nullptr;
};

void record(chaos_channel* c, const std::unique_ptr<int>& v) {
    if (v == nullptr || *v < 0 || std::size_t(*v) >= c->received.size()) {
        c->bad_items.fetch_add(1);
        return;
    }
    c->received[std::size_t(*v)].fetch_add(1);
}

tandem::task<> send_and_record(chaos_channel* c, std::unique_ptr<int> v) {
    const std::size_t id = std::size_t(*v);
    co_await c->ch.send(std::move(v));
    c->delivered[id].fetch_add(1);
}

tandem::task<> receive_and_record(chaos_channel* c, bool* closed) {
    auto v = co_await c->ch.receive();
    if (!v) {
        *closed = true;
        co_return;
    }
    record(c, *v);
}

/// Sends one item in one random way; records it as delivered only if the send said so.
tandem::task<> chaos_send(chaos_channel* c, int id, std::mt19937* rng) {
    auto v = std::make_unique<int>(id);
    const std::size_t slot = std::size_t(id);
    const auto d = random_us(*rng, 200);
    switch ((*rng)() % 6) {
        case 0:
            co_await c->ch.send(std::move(v));
            c->delivered[slot].fetch_add(1);
            break;
        case 1:
            try {
                co_await tandem::timeout(d, c->ch.send(std::move(v)));
                c->delivered[slot].fetch_add(1);
            } catch (const tandem::timed_out&) {
                c->cancelled.fetch_add(1);
            }
            break;
        case 2:
            co_await tandem::when_any(send_and_record(c, std::move(v)), tandem::sleep_for(d));
            break;
        case 3:
            try {
                co_await tandem::with_stop_token(c->stops->token(),
                                                 send_and_record(c, std::move(v)));
            } catch (const tandem::operation_cancelled&) {
                c->cancelled.fetch_add(1);
            }
            break;
        case 4: {
            const bool queued = c->ch.try_send(v);
            if (queued) {
                if (v != nullptr) c->bad_items.fetch_add(1);  // should have been moved from
                c->delivered[slot].fetch_add(1);
            } else {
                if (v == nullptr || *v != id) c->bad_items.fetch_add(1);  // should be intact
                co_await send_and_record(c, std::move(v));
            }
            break;
        }
        default: {
            tandem::task_group g;
            g.spawn(send_and_record(c, std::move(v)));
            g.spawn(fail_after(d));
            try {
                co_await g.join();
            } catch (const group_marker&) {
            }
            break;
        }
    }
}

/// Receives (at most) one item in one random way; true once the channel is closed and drained.
tandem::task<bool> chaos_receive(chaos_channel* c, std::mt19937* rng) {
    bool closed = false;
    const auto d = random_us(*rng, 200);
    switch ((*rng)() % 6) {
        case 0: {
            auto v = co_await c->ch.receive();
            if (v) {
                record(c, *v);
            } else {
                closed = true;
            }
            break;
        }
        case 1:
            try {
                auto v = co_await tandem::timeout(d, c->ch.receive());
                if (v) {
                    record(c, *v);
                } else {
                    closed = true;
                }
            } catch (const tandem::timed_out&) {
                c->cancelled.fetch_add(1);
            }
            break;
        case 2:
            co_await tandem::when_any(receive_and_record(c, &closed), tandem::sleep_for(d));
            break;
        case 3:
            try {
                co_await tandem::with_stop_token(c->stops->token(), receive_and_record(c, &closed));
            } catch (const tandem::operation_cancelled&) {
                c->cancelled.fetch_add(1);
            }
            break;
        case 4: {
            // Never waits; "empty" and "closed and drained" look alike here, so it never ends
            // the loop (a receive that waits does).
            auto v = c->ch.try_receive();
            if (v) {
                record(c, *v);
            } else {
                co_await tandem::yield();
            }
            break;
        }
        default: {
            tandem::task_group g;
            g.spawn(receive_and_record(c, &closed));
            g.spawn(fail_after(d));
            try {
                co_await g.join();
            } catch (const group_marker&) {
            }
            break;
        }
    }
    co_return closed;
}

tandem::task<> chaos_producer(chaos_channel* c, int first, int n, std::uint64_t seed) {
    std::mt19937 rng(static_cast<std::uint32_t>(seed));
    for (int id = first; id < first + n; ++id) {
        // Pauses now and then: the channel runs empty (receivers wait) or full (senders wait).
        if (rng() % 8 == 0) co_await tandem::sleep_for(random_us(rng, 400));
        co_await chaos_send(c, id, &rng);
    }
    if (c->producers_left.fetch_sub(1) == 1) c->ch.close();
    c->finished.fetch_add(1);
}

tandem::task<> chaos_consumer(chaos_channel* c, std::uint64_t seed) {
    std::mt19937 rng(static_cast<std::uint32_t>(seed));
    for (;;) {
        if (rng() % 8 == 0) co_await tandem::sleep_for(random_us(rng, 400));
        const bool closed = co_await chaos_receive(c, &rng);
        if (closed) break;
    }
    c->finished.fetch_add(1);
}

}  // namespace

TEST_CASE(
    "channel: sends and receives cancelled at random moments lose no item and deliver none "
    "twice",
    "[channel][cancel]") {
    const std::size_t capacity = GENERATE(0u, 1u, 8u, 1024u);
    const unsigned threads = GENERATE(1u, 2u);
    const std::uint64_t seed = test_seed();
    INFO("capacity " << capacity << ", io threads " << threads << ", seed " << seed
                     << " (TANDEM_TEST_SEED=" << seed << " replays it)");
    constexpr int producers = 6, consumers = 6, per_producer = 2000;
    chaos_channel c(capacity, producers * per_producer);
    c.producers_left = producers;
    {
        canceller stops(seed);
        c.stops = &stops;
        io_threads io(threads);
        for (int p = 0; p < producers; ++p) {
            io.start(unsigned(p), chaos_producer(&c, p * per_producer, per_producer,
                                                 seed * 100 + std::uint64_t(p)));
        }
        for (int k = 0; k < consumers; ++k) {
            io.start(unsigned(k + 1), chaos_consumer(&c, seed * 100 + 50 + std::uint64_t(k)));
        }
        io.join();
    }
    int lost = 0, twice = 0, phantom = 0, delivered = 0;
    for (std::size_t i = 0; i < c.received.size(); ++i) {
        const int d = c.delivered[i].load(), r = c.received[i].load();
        delivered += d;
        if (d == 1 && r == 0) ++lost;
        if (r > 1 || d > 1) ++twice;
        if (d == 0 && r > 0) ++phantom;  // received, but its send threw
    }
    INFO(delivered << " delivered, " << c.cancelled.load() << " waits cancelled");
    CHECK(lost == 0);
    CHECK(twice == 0);
    CHECK(phantom == 0);
    CHECK(c.bad_items.load() == 0);
    CHECK(c.finished.load() == producers + consumers);
    CHECK(c.ch.size() == 0);
    CHECK(c.ch.is_closed());
}

// ---- a mixed stress test of every primitive --------------------------------------------

namespace {

/// producers ─▶ jobs (channel, 16) ─▶ workers: a semaphore(3) permit, a read-modify-write
/// under the mutex, then a bounded stage queue (mutex + two condition variables) ─▶
/// collectors ─▶ results (channel, rendezvous) ─▶ sinks. An event starts everyone; latches
/// tell the closer when each stage is done. Many waits are cut short by timeouts.
struct pipeline {
    static constexpr int producers = 4, workers = 6, collectors = 3, sinks = 3;
    static constexpr std::size_t stage_bound = 8;

    explicit pipeline(int items)
        : delivered(std::size_t(items)),
          processed(std::size_t(items)),
          collected(std::size_t(items)) {}

    tandem::event go;
    tandem::channel<std::unique_ptr<int>> jobs{16};
    tandem::channel<int> results{0};
    tandem::semaphore permits{3};
    tandem::mutex m;
    tandem::condition_variable not_empty, not_full;
    std::deque<int> stage;          // guarded by m
    bool workers_finished = false;  // guarded by m
    long processed_total = 0;       // guarded by m
    tandem::latch workers_done{workers};
    tandem::latch collectors_done{collectors};
    std::atomic<int> producers_left{producers};
    std::vector<std::atomic<int>> delivered, processed, collected;
    std::atomic<int> in_sem{0}, max_in_sem{0}, in_m{0}, max_in_m{0};
    std::atomic<int> not_held_after_wait{0};
    std::atomic<long> timeouts{0};
};

tandem::task<> pipeline_producer(pipeline* p, int first, int n, std::uint64_t seed) {
    std::mt19937 rng(static_cast<std::uint32_t>(seed));
    co_await p->go.wait();
    for (int id = first; id < first + n; ++id) {
        auto v = std::make_unique<int>(id);
        if (rng() % 4 == 0) {
            try {
                co_await tandem::timeout(random_us(rng, 100), p->jobs.send(std::move(v)));
                p->delivered[std::size_t(id)].fetch_add(1);
            } catch (const tandem::timed_out&) {
                p->timeouts.fetch_add(1);  // dropped: never delivered
            }
        } else {
            co_await p->jobs.send(std::move(v));
            p->delivered[std::size_t(id)].fetch_add(1);
        }
    }
    if (p->producers_left.fetch_sub(1) == 1) p->jobs.close();
}

/// With the mutex held: waits for room in the stage queue, then queues `id`.
tandem::task<> stage_push(pipeline* p, int id, std::mt19937* rng) {
    while (p->stage.size() >= pipeline::stage_bound) {
        try {
            co_await tandem::timeout(random_us(*rng, 300), p->not_full.wait(p->m));
        } catch (const tandem::timed_out&) {
            p->timeouts.fetch_add(1);
        }
        if (p->m.try_lock()) p->not_held_after_wait.fetch_add(1);  // (then it holds it)
    }
    p->stage.push_back(id);
    p->not_empty.notify_one();
}

tandem::task<> process_job(pipeline* p, int id, std::mt19937* rng) {
    for (;;) {  // a permit, however many timeouts it takes
        try {
            co_await tandem::timeout(random_us(*rng, 200), p->permits.acquire());
            break;
        } catch (const tandem::timed_out&) {
            p->timeouts.fetch_add(1);
        }
    }
    {
        occupancy permit(&p->in_sem, &p->max_in_sem);
        co_await tandem::sleep_for(0ns);
        auto guard = co_await p->m.scoped();
        {
            occupancy exclusive(&p->in_m, &p->max_in_m);
            const long seen = p->processed_total;
            co_await tandem::yield();
            p->processed_total = seen + 1;
            p->processed[std::size_t(id)].fetch_add(1);
        }
        co_await stage_push(p, id, rng);
    }
    p->permits.release();
}

tandem::task<> pipeline_worker(pipeline* p, std::uint64_t seed) {
    std::mt19937 rng(static_cast<std::uint32_t>(seed));
    co_await p->go.wait();
    for (;;) {
        std::optional<std::unique_ptr<int>> job;
        try {
            job = co_await tandem::timeout(random_us(rng, 300), p->jobs.receive());
        } catch (const tandem::timed_out&) {
            p->timeouts.fetch_add(1);
            continue;
        }
        if (!job) break;
        co_await process_job(p, **job, &rng);
    }
    p->workers_done.count_down();
}

tandem::task<> pipeline_collector(pipeline* p, std::uint64_t seed) {
    std::mt19937 rng(static_cast<std::uint32_t>(seed));
    co_await p->go.wait();
    for (;;) {
        auto guard = co_await p->m.scoped();
        try {
            co_await tandem::timeout(random_us(rng, 500), p->not_empty.wait(p->m, [p] {
                return !p->stage.empty() || p->workers_finished;
            }));
        } catch (const tandem::timed_out&) {
            p->timeouts.fetch_add(1);
            if (p->m.try_lock()) p->not_held_after_wait.fetch_add(1);
            continue;  // the guard unlocks
        }
        if (p->stage.empty()) break;  // the workers are done and the stage is drained
        const int id = p->stage.front();
        p->stage.pop_front();
        p->not_full.notify_one();
        guard.unlock();
        co_await p->results.send(id);
    }
    p->collectors_done.count_down();
}

tandem::task<> pipeline_sink(pipeline* p) {
    co_await p->go.wait();
    while (auto id = co_await p->results.receive()) {
        if (*id >= 0 && std::size_t(*id) < p->collected.size()) {
            p->collected[std::size_t(*id)].fetch_add(1);
        }
    }
}

tandem::task<> pipeline_closer(pipeline* p) {
    co_await p->go.wait();
    co_await p->workers_done.wait();
    {
        auto guard = co_await p->m.scoped();
        p->workers_finished = true;
        p->not_empty.notify_all();
    }
    co_await p->collectors_done.wait();
    p->results.close();
}

}  // namespace

TEST_CASE(
    "stress: a pipeline of channels, semaphore, mutex, condition variables, event and latches "
    "on two io threads, with random timeouts, loses and duplicates nothing",
    "[channel][sync][stress]") {
    const std::uint64_t seed = test_seed();
    INFO("seed " << seed << " (TANDEM_TEST_SEED=" << seed << " replays it)");
    constexpr int per_producer = 10000;
    constexpr int items = pipeline::producers * per_producer;
    pipeline p(items);
    {
        io_threads io(2);
        unsigned next = 0;
        for (int i = 0; i < pipeline::producers; ++i) {
            io.start(next++, pipeline_producer(&p, i * per_producer, per_producer,
                                               seed * 10 + std::uint64_t(i)));
        }
        for (int i = 0; i < pipeline::workers; ++i) {
            io.start(next++, pipeline_worker(&p, seed * 20 + std::uint64_t(i)));
        }
        for (int i = 0; i < pipeline::collectors; ++i) {
            io.start(next++, pipeline_collector(&p, seed * 30 + std::uint64_t(i)));
        }
        for (int i = 0; i < pipeline::sinks; ++i) io.start(next++, pipeline_sink(&p));
        io.start(next++, pipeline_closer(&p));
        p.go.set();  // from the test's thread
        io.join();
    }
    int delivered = 0, mismatched = 0;
    for (std::size_t i = 0; i < p.delivered.size(); ++i) {
        const int d = p.delivered[i].load();
        delivered += d;
        if (d > 1 || p.processed[i].load() != d || p.collected[i].load() != d) ++mismatched;
    }
    INFO(delivered << " of " << items << " delivered, " << p.timeouts.load() << " timeouts");
    CHECK(mismatched == 0);
    CHECK(p.processed_total == delivered);
    CHECK(p.stage.empty());
    CHECK(p.max_in_sem.load() <= 3);
    CHECK(p.max_in_m.load() == 1);
    CHECK(p.not_held_after_wait.load() == 0);
    CHECK(p.permits.available() == 3);
    CHECK(p.m.try_lock());
    p.m.unlock();
    CHECK(p.jobs.size() == 0);
    CHECK(p.results.size() == 0);
    CHECK(p.workers_done.try_wait());
    CHECK(p.collectors_done.try_wait());
}

// ---- destroying a channel with waiters ----------------------------------------------

namespace {

constexpr const char* child_env = "TANDEM_CHANNEL_TEST_CHILD";

tandem::task<> receive_forever(tandem::channel<int>* ch) {
    (void)co_await ch->receive();
}

tandem::task<> send_forever(tandem::channel<int>* ch) {
    co_await ch->send(1);
}

/// Starts `t` as a root of the current loop and lets it run up to its first suspension.
tandem::task<> spawn_and_let_run(tandem::task<> t) {
    tandem::runtime::current()->spawn(std::move(t));
    co_await tandem::yield();
    co_await tandem::yield();
}

/// Runs the hidden child test case for `who` (sync_support.hpp).
int run_child(const char* who, std::string* output) {
    return run_child_case("[child_channel_destroyed]", child_env, who, output);
}

}  // namespace

TEST_CASE("child: a channel destroyed while a task waits on it", "[.child_channel_destroyed]") {
    const char* who = std::getenv(child_env);
    if (who == nullptr) return;  // only when started by the test below
    for (int sig : {SIGABRT, SIGSEGV}) std::signal(sig, SIG_DFL);
    ::dup2(STDOUT_FILENO, STDERR_FILENO);  // the parent reads the message on our stdout
    const bool sender = std::string(who) == "sender";
    auto ch = std::make_unique<tandem::channel<int>>(sender ? 0 : 4);
    io_threads io(1);
    io.run(0, spawn_and_let_run(sender ? send_forever(ch.get()) : receive_forever(ch.get())));
    ch.reset();  // aborts: a task waits on it
    std::printf("destroying the channel did not abort\n");
    std::fflush(stdout);
    ::_exit(0);
}

TEST_CASE("destroying a channel while a sender or a receiver waits on it aborts with a message",
          "[channel]") {
    const char* who = GENERATE("receiver", "sender");
    INFO("waiting: " << who);
    std::string output;
    const int status = run_child(who, &output);
    INFO("child output: " << output);
    REQUIRE(WIFSIGNALED(status));
    CHECK(WTERMSIG(status) == SIGABRT);
    CHECK(output.find("tandem::channel destroyed while tasks wait on it") != std::string::npos);
}
