// SPDX-License-Identifier: MIT
#include <tandem/cancel.hpp>

#include "loop.hpp"

#include <atomic>

namespace tandem::detail {

// Shared between the awaiting frame (on the loop) and a stop request posted
// from another thread. `alive` and `node` are read and written on the loop
// thread only; `refs` and `posted` are the cross-thread part.
struct stop_token_bridge::shared : posted_item {
    std::atomic<int> refs{1};
    std::atomic<bool> posted{false};
    loop* home = nullptr;
    stop_node* node = nullptr;
    bool alive = true;

    void release() noexcept {
        if (refs.fetch_sub(1, std::memory_order_acq_rel) == 1) delete this;
    }

    static void deliver(posted_item* item) noexcept {
        auto* s = static_cast<shared*>(item);
        if (s->alive) s->node->request_stop();
        s->release();
    }
};

stop_token_bridge::stop_token_bridge(stop_node* node) : shared_(new shared) {
    shared_->home = &require_loop("with_stop_token");
    shared_->node = node;
    shared_->run = &shared::deliver;
}

stop_token_bridge::~stop_token_bridge() {
    shared_->alive = false;
    shared_->release();
}

void stop_token_bridge::request() noexcept {
    if (this_thread_loop() == shared_->home) {
        // Same loop (or std::stop_callback's constructor): no hop needed.
        // Hooks never resume coroutines inline, so this is safe mid-task.
        if (shared_->alive) shared_->node->request_stop();
        return;
    }
    if (shared_->posted.exchange(true, std::memory_order_relaxed)) return;
    shared_->refs.fetch_add(1, std::memory_order_relaxed);
    shared_->home->post(shared_);
}

}  // namespace tandem::detail
