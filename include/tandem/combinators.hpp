// SPDX-License-Identifier: MIT
#pragma once

/// \file
/// Running tasks concurrently on the current loop: `when_all`, `when_any`,
/// `task_group` and `yield`.
///
/// Children run on the loop of the coroutine that awaits the combinator and
/// inherit its cancellation. Combinators take tasks by value: the tasks' frames
/// are owned by the combinator's frame until every child has finished.

#include <tandem/detail/child_task.hpp>
#include <tandem/detail/loop_api.hpp>
#include <tandem/error.hpp>
#include <tandem/task.hpp>

#include <array>
#include <cstddef>
#include <tuple>
#include <utility>
#include <variant>
#include <vector>

namespace tandem {

namespace detail {

template <class... T, std::size_t... I>
task<std::tuple<non_void_t<T>...>> when_all_impl(std::index_sequence<I...>, task<T>... ts) {
    stop_node* node = co_await get_stop_node{};
    std::tuple<result_slot<T>...> slots;
    join_state join{sizeof...(T) + 1};
    std::array<child_task, sizeof...(T)> children{run_child(std::move(ts), &std::get<I>(slots))...};
    for (auto& c : children) c.start(&join, node);
    co_await join_all{&join};
    // Every child has finished; the first exception (in argument order) wins.
    std::exception_ptr first;
    ((first = first ? first : std::get<I>(slots).error), ...);
    if (first) std::rethrow_exception(first);
    co_return std::tuple<non_void_t<T>...>(std::move(*std::get<I>(slots).value)...);
}

/// when_any's shared state: its own stop node (a child of the awaiter's) and
/// the index of the first child to finish.
struct any_state {
    stop_node node;
    std::size_t winner = static_cast<std::size_t>(-1);
};

template <class T>
child_task run_any_child(task<T> t, result_slot<T>* slot, any_state* st, std::size_t index) {
    try {
        if constexpr (std::is_void_v<T>) {
            co_await std::move(t);
            slot->value.emplace();
        } else {
            slot->value.emplace(co_await std::move(t));
        }
    } catch (...) {
        slot->error = std::current_exception();
    }
    if (st->winner == static_cast<std::size_t>(-1)) {
        st->winner = index;
        st->node.request_stop();  // cancels the others; none is resumed inline
    }
}

template <class V, std::size_t I, class Slots>
V take_winner(Slots& slots, std::size_t winner) {
    if constexpr (I + 1 < std::tuple_size_v<Slots>) {
        if (winner != I) return take_winner<V, I + 1>(slots, winner);
    }
    return V(std::in_place_index<I>, std::get<I>(slots).take());
}

template <class... T, std::size_t... I>
task<std::variant<non_void_t<T>...>> when_any_impl(std::index_sequence<I...>, task<T>... ts) {
    any_state st;
    st.node.attach(co_await get_stop_node{});
    std::tuple<result_slot<T>...> slots;
    join_state join{sizeof...(T) + 1};
    std::array<child_task, sizeof...(T)> children{
        run_any_child(std::move(ts), &std::get<I>(slots), &st, I)...};
    for (auto& c : children) c.start(&join, &st.node);
    co_await join_all{&join};
    co_return take_winner<std::variant<non_void_t<T>...>, 0>(slots, st.winner);
}

struct yield_awaiter {
    bool cancelled_ = false;
    bool await_ready() const noexcept { return false; }
    template <class P>
    bool await_suspend(std::coroutine_handle<P> h) noexcept {
        stop_node* node = stop_of(h);
        if (node != nullptr && node->stop_requested()) {
            cancelled_ = true;
            return false;
        }
        schedule(h);
        return true;
    }
    void await_resume() const {
        if (cancelled_) throw operation_cancelled();
    }
};

}  // namespace detail

/// Runs every task concurrently on the current loop and waits for all of them.
/// Returns their results in order (`void` becomes `std::monostate`). Every
/// child runs to completion; if any threw, the first exception in argument
/// order is rethrown after all have finished. Cancelling the awaiter cancels
/// every child.
template <class... T>
task<std::tuple<detail::non_void_t<T>...>> when_all(task<T>... tasks) {
    return detail::when_all_impl(std::index_sequence_for<T...>{}, std::move(tasks)...);
}

/// The vector form of when_all: results in the order of `tasks`.
template <class T>
task<std::vector<detail::non_void_t<T>>> when_all(std::vector<task<T>> tasks) {
    detail::stop_node* node = co_await detail::get_stop_node{};
    std::vector<detail::result_slot<T>> slots(tasks.size());
    std::vector<detail::child_task> children;
    children.reserve(tasks.size());
    for (std::size_t i = 0; i < tasks.size(); ++i) {
        children.push_back(detail::run_child(std::move(tasks[i]), &slots[i]));
    }
    detail::join_state join{tasks.size() + 1};
    for (auto& c : children) c.start(&join, node);
    co_await detail::join_all{&join};
    std::vector<detail::non_void_t<T>> out;
    out.reserve(slots.size());
    for (auto& s : slots) {
        if (s.error) std::rethrow_exception(s.error);
    }
    for (auto& s : slots) out.push_back(std::move(*s.value));
    co_return out;
}

/// Runs the tasks concurrently; the first to finish (value or exception) wins.
/// The others are cancelled and awaited before it returns, so nothing of
/// theirs is still running afterwards. `index()` of the result names the
/// winner; if the winner threw, its exception is rethrown. What the losers
/// produced or threw is discarded.
template <class... T>
task<std::variant<detail::non_void_t<T>...>> when_any(task<T>... tasks) {
    static_assert(sizeof...(T) > 0, "when_any needs at least one task");
    return detail::when_any_impl(std::index_sequence_for<T...>{}, std::move(tasks)...);
}

/// Lets the other ready tasks of this loop run, then resumes. A cancellation
/// point: throws `operation_cancelled` if the caller was cancelled.
task<> yield();

}  // namespace tandem

#include <tandem/task_group.hpp>  // IWYU pragma: export
