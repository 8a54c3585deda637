// SPDX-License-Identifier: MIT
#pragma once

/// \file
/// `tandem::task<T>`: a lazy, move-only coroutine. Nothing runs until the task is
/// awaited (or handed to `runtime::spawn` / `block_on`); `co_await` on it runs it
/// to completion by symmetric transfer and yields its value or rethrows its
/// exception. A task resumes on the loop it started on.
///
/// Lifetime: a task started by `co_await` is owned by its awaiter, which stays
/// suspended until it finishes. Do not pass references to a coroutine that may
/// outlive the caller's frame, and do not make capturing lambdas coroutines
/// (C++ Core Guidelines CP.51, CP.53): capture by moving values into parameters.

#include <tandem/detail/frame_pool.hpp>
#include <tandem/detail/stop_node.hpp>

#include <coroutine>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <type_traits>
#include <utility>
#include <variant>

namespace tandem {

template <class T = void>
class task;

namespace detail {

/// What every tandem coroutine's promise carries: where to go when it ends,
/// and the cancellation node it answers to.
struct promise_base {
    std::coroutine_handle<> continuation_ = std::noop_coroutine();
    stop_node* stop_ = nullptr;
    bool stop_bound_ = false;  // set by bind_stop: awaiting must not replace stop_

    // Coroutine frames come from a per-thread cache (detail/frame_pool.hpp).
    static void* operator new(std::size_t n) { return frame_alloc(n); }
    static void operator delete(void* p, std::size_t n) noexcept { frame_free(p, n); }
};

template <class P>
stop_node* stop_of(std::coroutine_handle<P> h) noexcept {
    if constexpr (std::is_base_of_v<promise_base, P>) {
        return h.promise().stop_;
    } else {
        return nullptr;
    }
}

/// `co_await get_stop_node{}` yields the awaiting coroutine's own stop node
/// without suspending.
struct get_stop_node {
    stop_node* node_ = nullptr;
    bool await_ready() const noexcept { return false; }
    template <class P>
    bool await_suspend(std::coroutine_handle<P> h) noexcept {
        node_ = stop_of(h);
        return false;
    }
    stop_node* await_resume() const noexcept { return node_; }
};

struct final_awaiter {
    bool await_ready() const noexcept { return false; }
    template <class P>
    std::coroutine_handle<> await_suspend(std::coroutine_handle<P> h) noexcept {
        return h.promise().continuation_;
    }
    void await_resume() const noexcept {}
};

[[noreturn]] inline void contract_violation(const char* what) noexcept {
    std::fprintf(stderr, "tandem: precondition violated: %s\n", what);
    std::abort();
}

template <class T>
class task_promise : public promise_base {
public:
    task<T> get_return_object() noexcept;
    std::suspend_always initial_suspend() const noexcept { return {}; }
    final_awaiter final_suspend() const noexcept { return {}; }
    void unhandled_exception() noexcept { result_.template emplace<2>(std::current_exception()); }

    template <class U>
    requires std::is_convertible_v<U&&, T>
    void return_value(U&& v) noexcept(std::is_nothrow_constructible_v<T, U&&>) {
        result_.template emplace<1>(std::forward<U>(v));
    }

    T take_result() {
        if (result_.index() == 2) std::rethrow_exception(std::get<2>(result_));
        return std::move(std::get<1>(result_));
    }

private:
    std::variant<std::monostate, T, std::exception_ptr> result_;
};

template <>
class task_promise<void> : public promise_base {
public:
    task<void> get_return_object() noexcept;
    std::suspend_always initial_suspend() const noexcept { return {}; }
    final_awaiter final_suspend() const noexcept { return {}; }
    void unhandled_exception() noexcept { error_ = std::current_exception(); }
    void return_void() const noexcept {}
    void take_result() {
        if (error_) std::rethrow_exception(error_);
    }

private:
    std::exception_ptr error_;
};

}  // namespace detail

/// A lazily started coroutine producing `T`.
///
/// - Threading: runs on the loop of the coroutine that awaits it.
/// - Cancellation: inherits the awaiter's cancellation; its awaitables throw
///   `tandem::operation_cancelled` once it is cancelled.
/// - Errors: `co_await` rethrows whatever the coroutine threw.
/// Destroying a task that was never started destroys its frame; a started task
/// is always finished by its awaiter before it can be destroyed.
template <class T>
class [[nodiscard]] task {
public:
    using promise_type = detail::task_promise<T>;
    using handle_type = std::coroutine_handle<promise_type>;
    using value_type = T;

    task() noexcept = default;
    explicit task(handle_type h) noexcept : h_(h) {}
    task(task&& other) noexcept : h_(std::exchange(other.h_, {})) {}
    task& operator=(task&& other) noexcept {
        if (this != &other) {
            if (h_) h_.destroy();
            h_ = std::exchange(other.h_, {});
        }
        return *this;
    }
    task(const task&) = delete;
    task& operator=(const task&) = delete;
    ~task() {
        if (h_) h_.destroy();
    }

    /// False for a default-constructed or moved-from task.
    bool valid() const noexcept { return static_cast<bool>(h_); }

    class [[nodiscard]] awaiter {
    public:
        explicit awaiter(handle_type h) noexcept : h_(h) {}
        bool await_ready() const noexcept { return false; }
        template <class P>
        std::coroutine_handle<> await_suspend(std::coroutine_handle<P> parent) noexcept {
            auto& p = h_.promise();
            p.continuation_ = parent;
            if (!p.stop_bound_) p.stop_ = detail::stop_of(parent);
            return h_;
        }
        T await_resume() { return h_.promise().take_result(); }

    private:
        handle_type h_;
    };

    awaiter operator co_await() && noexcept { return awaiter(checked()); }
    awaiter operator co_await() & noexcept { return awaiter(checked()); }

    /// For tandem's internals: gives up ownership of the frame.
    handle_type release() noexcept { return std::exchange(h_, {}); }
    handle_type handle() const noexcept { return h_; }

private:
    handle_type checked() const noexcept {
        if (!h_ || h_.done()) detail::contract_violation("co_await on an empty or finished task");
        return h_;
    }

    handle_type h_;
};

namespace detail {

template <class T>
task<T> task_promise<T>::get_return_object() noexcept {
    return task<T>(std::coroutine_handle<task_promise<T>>::from_promise(*this));
}

inline task<void> task_promise<void>::get_return_object() noexcept {
    return task<void>(std::coroutine_handle<task_promise<void>>::from_promise(*this));
}

/// Makes `t` answer to `node` instead of its awaiter's node.
template <class T>
task<T> bind_stop(task<T> t, stop_node* node) noexcept {
    auto& p = t.handle().promise();
    p.stop_ = node;
    p.stop_bound_ = true;
    return t;
}

/// `void` results become `std::monostate` inside tuples and variants.
template <class T>
using non_void_t = std::conditional_t<std::is_void_v<T>, std::monostate, T>;

}  // namespace detail
}  // namespace tandem
