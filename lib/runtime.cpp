// SPDX-License-Identifier: MIT
#include <tandem/combinators.hpp>
#include <tandem/detail/thread_pool.hpp>
#include <tandem/runtime.hpp>

#include "fd_advice.hpp"
#include "loop.hpp"
#include "process/pool.hpp"
#include "ring_setup.hpp"

#include <sys/eventfd.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <future>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

namespace tandem {

namespace detail {

root_task::promise_type::~promise_type() {
    if (start_.target != nullptr) start_.target->root_finished();
}

namespace {

void run_root_start(posted_item* item) noexcept {
    auto* s = static_cast<root_start*>(item);
    s->node->attach(&s->target->roots());  // a loop shutting down stops it at once
    s->target->root_started();
    s->target->schedule(s->handle);
}

root_task spawn_root(task<> t) {
    try {
        co_await std::move(t);
    } catch (const operation_cancelled&) {
        // cancellation is an outcome, not a failure
    } catch (const std::exception& e) {
        std::fprintf(stderr, "tandem: a spawned task failed: %s\n", e.what());
    } catch (...) {
        std::fprintf(stderr, "tandem: a spawned task failed with a non-std exception\n");
    }
}

[[gnu::tls_model("initial-exec")]] thread_local runtime* tls_runtime = nullptr;

}  // namespace

void start_root(loop& target, root_task root) noexcept {
    auto& p = root.handle().promise();
    p.start_.run = &run_root_start;
    p.start_.handle = root.handle();
    p.start_.node = &p.node_;
    p.start_.target = &target;
    if (this_thread_loop() == &target) {
        run_root_start(&p.start_);
    } else {
        target.post(&p.start_);
    }
}

}  // namespace detail

struct runtime::impl {
    explicit impl(unsigned blocking_threads) : blocking(blocking_threads) {}

    std::vector<std::thread> threads;
    std::vector<detail::loop*> loops;
    std::atomic<unsigned> next{0};
    std::string features;
    backend_info backend;
    detail::thread_pool blocking;  // offload_to_thread
    std::unique_ptr<detail::process_pool_impl> pool;
    process_pool pool_handle{nullptr};
};

namespace {

/// Settles `asked` (automatic: probe io_uring) and says why.
backend_info choose_backend(io_backend asked) {
    if (asked == io_backend::io_uring)
        return {io_backend::io_uring, "asked for in runtime_options"};
    if (asked == io_backend::epoll) return {io_backend::epoll, "asked for in runtime_options"};
    std::string why = detail::io_uring_unavailable();
    if (why.empty()) return {io_backend::io_uring, "io_uring works in this process"};
    // One line per process: a program that makes many runtimes is told once.
    static std::atomic<bool> told{false};
    if (!told.exchange(true)) {
        std::fprintf(stderr, "tandem: using the epoll backend: %s\n", why.c_str());
    }
    return {io_backend::epoll, std::move(why)};
}

/// The loops' eventfds, made before the pool so its workers can signal them.
std::vector<int> make_wake_fds(unsigned n) {
    std::vector<int> fds;
    for (unsigned i = 0; i < n; ++i) {
        const int fd = ::eventfd(0, EFD_CLOEXEC);
        if (fd < 0) {
            const int err = errno;
            for (int f : fds) ::close(f);
            throw std::system_error(err, std::system_category(),
                                    "tandem: eventfd" + detail::fd_advice(err));
        }
        fds.push_back(fd);
    }
    return fds;
}

}  // namespace

runtime::runtime(runtime_options options)
    : impl_(std::make_unique<impl>(options.blocking_threads)) {
    if (options.io_threads == 0) options.io_threads = 1;
    impl_->backend = choose_backend(options.backend);
    const bool use_epoll = impl_->backend.kind == io_backend::epoll;
    std::vector<int> wake_fds = make_wake_fds(options.io_threads);
    if (options.processes.enabled) {
        // Before any io thread: the zygote forks a process with one thread.
        try {
            impl_->pool = std::make_unique<detail::process_pool_impl>(options.processes, wake_fds);
        } catch (...) {
            for (int fd : wake_fds) ::close(fd);
            throw;
        }
        impl_->pool_handle = process_pool(impl_->pool.get());
    }
    std::vector<std::future<detail::loop*>> ready;
    for (unsigned i = 0; i < options.io_threads; ++i) {
        std::promise<detail::loop*> made;
        ready.push_back(made.get_future());
        impl_->threads.emplace_back([this, i, entries = options.ring_entries, fd = wake_fds[i],
                                     use_epoll, made = std::move(made)]() mutable {
            // The ring is created on its own thread: SINGLE_ISSUER binds it there.
            std::unique_ptr<detail::loop> l;
            try {
                l = std::make_unique<detail::loop>(entries, fd, use_epoll);
            } catch (...) {
                made.set_exception(std::current_exception());
                return;
            }
            l->attach_poller(impl_->pool.get(), i);
            detail::tls_runtime = this;
            made.set_value(l.get());
            l->run();
            detail::tls_runtime = nullptr;
            // The runtime deletes the loop after joining: a thread that posted to
            // it (request_shutdown) may still be inside loop::post, about to
            // write its eventfd, when run() returns here.
            (void)l.release();
        });
    }
    std::exception_ptr failure;
    for (auto& f : ready) {
        try {
            impl_->loops.push_back(f.get());
        } catch (...) {
            if (!failure) failure = std::current_exception();
        }
    }
    if (failure) {
        for (detail::loop* l : impl_->loops) l->request_shutdown();
        for (auto& t : impl_->threads) t.join();
        for (detail::loop* l : impl_->loops) delete l;
        impl_->pool.reset();
        std::rethrow_exception(failure);
    }
    impl_->features = impl_->loops.front()->features();
    if (impl_->pool) impl_->pool->start(impl_->loops);
}

runtime::~runtime() {
    if (detail::this_thread_loop() != nullptr && detail::tls_runtime == this) {
        detail::contract_violation("a runtime destroyed from one of its own io threads");
    }
    // The process pool stops replacing workers, and a job cancelled by the
    // shutdown leaves at once instead of waiting for its worker's death.
    if (impl_->pool) impl_->pool->begin_shutdown();
    for (detail::loop* l : impl_->loops) l->request_shutdown();
    for (auto& t : impl_->threads) t.join();
    // The blocking pool stops after the loops and before they are deleted.
    // After: a loop finishes only when its roots have, and shutdown has
    // cancelled every queued job and waited for every running one, so the
    // queue is empty and no io thread is left to queue more. Before deleting
    // the loops: a pool thread that posted a result may still be inside
    // loop::post, writing the loop's eventfd, after the loop consumed the item
    // and exited; joining the pool threads waits for that last touch.
    impl_->blocking.stop();
    for (detail::loop* l : impl_->loops) delete l;
    impl_->pool.reset();  // after the loops: nothing polls it any more
}

void runtime::spawn(task<> t) {
    detail::start_root(pick_loop_for_spawn(), detail::spawn_root(std::move(t)));
}

unsigned runtime::io_threads() const noexcept {
    return static_cast<unsigned>(impl_->loops.size());
}

runtime* runtime::current() noexcept {
    return detail::tls_runtime;
}

const char* runtime::ring_features() const noexcept {
    return impl_->features.c_str();
}

const backend_info& runtime::backend() const noexcept {
    return impl_->backend;
}

const char* to_string(io_backend b) noexcept {
    switch (b) {
        case io_backend::automatic:
            return "automatic";
        case io_backend::io_uring:
            return "io_uring";
        case io_backend::epoll:
            return "epoll";
    }
    return "unknown";
}

detail::loop& runtime::pick_loop_for_block_on() {
    if (detail::this_thread_loop() != nullptr) {
        detail::contract_violation(
            "runtime::block_on called from an io thread (it would deadlock); co_await the task");
    }
    unsigned i = impl_->next.fetch_add(1, std::memory_order_relaxed);
    return *impl_->loops[i % impl_->loops.size()];
}

detail::loop& runtime::pick_loop_for_spawn() {
    if (detail::tls_runtime == this) return *detail::this_thread_loop();
    unsigned i = impl_->next.fetch_add(1, std::memory_order_relaxed);
    return *impl_->loops[i % impl_->loops.size()];
}

detail::thread_pool& detail::current_thread_pool() noexcept {
    runtime* rt = runtime::current();
    if (rt == nullptr) {
        detail::contract_violation(
            "offload_to_thread must be awaited from a task on one of a runtime's io threads");
    }
    return rt->impl_->blocking;
}

process_pool& runtime::processes() noexcept {
    return impl_->pool_handle;
}

process_pool_stats process_pool::stats() const {
    if (impl_ == nullptr) return {};
    return impl_->stats();
}

detail::process_pool_impl& detail::current_pool(const char* what) {
    runtime* rt = runtime::current();
    if (rt == nullptr) {
        std::fprintf(stderr, "tandem: %s must be called from a task on a runtime's io thread\n",
                     what);
        std::abort();
    }
    if (!rt->impl_->pool) {
        throw std::logic_error(std::string("tandem: ") + what +
                               ": this runtime's process pool is disabled "
                               "(runtime_options::processes.enabled = false)");
    }
    return *rt->impl_->pool;
}

detail::loop* detail_loop_of(runtime& rt, unsigned index) noexcept {
    return index < rt.impl_->loops.size() ? rt.impl_->loops[index] : nullptr;
}

task<> yield() {
    co_await detail::yield_awaiter{};
}

}  // namespace tandem
