// SPDX-License-Identifier: MIT
#include <tandem/error.hpp>
#include <tandem/task_group.hpp>

#include "loop.hpp"

#include <exception>

namespace tandem {

namespace detail {

/// Outlives the task_group object when the group is destroyed with children
/// still running: the last child frees it. Loop thread only.
struct group_state {
    stop_node node;
    std::size_t running = 0;
    std::exception_ptr first_error;
    std::coroutine_handle<> joiner;
    loop* home = nullptr;
    bool orphaned = false;  // the task_group object is gone

    void record(std::exception_ptr e) noexcept {
        if (first_error) return;
        first_error = std::move(e);
        node.request_stop();  // the first failure cancels the rest
    }
};

namespace {

class group_child {
public:
    struct promise_type : promise_base {
        group_state* group = nullptr;

        group_child get_return_object() noexcept {
            return group_child(std::coroutine_handle<promise_type>::from_promise(*this));
        }
        std::suspend_always initial_suspend() const noexcept { return {}; }
        struct finish {
            bool await_ready() const noexcept { return false; }
            std::coroutine_handle<> await_suspend(
                std::coroutine_handle<promise_type> h) const noexcept {
                group_state* g = h.promise().group;
                h.destroy();  // this frame is done; nothing refers to it
                if (--g->running != 0) return std::noop_coroutine();
                if (g->orphaned) {
                    g->home->root_finished();
                    delete g;
                    return std::noop_coroutine();
                }
                return g->joiner ? g->joiner : std::noop_coroutine();
            }
            void await_resume() const noexcept {}
        };
        finish final_suspend() const noexcept { return {}; }
        void return_void() const noexcept {}
        void unhandled_exception() const noexcept { std::terminate(); }
    };

    explicit group_child(std::coroutine_handle<promise_type> h) noexcept : h_(h) {}
    std::coroutine_handle<promise_type> handle() const noexcept { return h_; }

private:
    std::coroutine_handle<promise_type> h_;
};

group_child run_group_child(task<> t, group_state* g) {
    try {
        co_await std::move(t);
    } catch (...) {
        g->record(std::current_exception());
    }
}

struct join_awaiter {
    group_state* g;
    bool await_ready() const noexcept { return g->running == 0; }
    template <class P>
    bool await_suspend(std::coroutine_handle<P> h) noexcept {
        g->node.attach(stop_of(h));  // cancelling the joiner now cancels the children
        if (g->running == 0) return false;
        g->joiner = h;
        return true;
    }
    void await_resume() const noexcept {
        g->joiner = nullptr;
        g->node.attach(nullptr);  // the joiner's node may die before the group
    }
};

}  // namespace
}  // namespace detail

task_group::task_group() : state_(new detail::group_state) {}

task_group::~task_group() {
    detail::group_state* g = state_;
    if (g->running == 0) {
        delete g;
        return;
    }
    // Children still running (the owner threw before join): cancel them and
    // let them finish as a root of their loop, which shutdown waits for.
    g->orphaned = true;
    g->node.attach(&g->home->roots());
    g->node.request_stop();
    g->home->root_started();
}

void task_group::spawn(task<> t) {
    detail::group_state* g = state_;
    detail::loop& l = detail::require_loop("task_group::spawn");
    if (g->home == nullptr) g->home = &l;
    if (g->home != &l) detail::contract_violation("task_group used from two io threads");
    auto child = detail::run_group_child(std::move(t), g);
    auto& p = child.handle().promise();
    p.group = g;
    p.stop_ = &g->node;
    ++g->running;
    l.schedule(child.handle());
}

task<> task_group::join() {
    detail::group_state* g = state_;
    co_await detail::join_awaiter{g};
    if (g->first_error) std::rethrow_exception(std::exchange(g->first_error, nullptr));
}

std::size_t task_group::running() const noexcept {
    return state_->running;
}

}  // namespace tandem
