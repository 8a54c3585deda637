// SPDX-License-Identifier: MIT
#pragma once

// The cancellation tree. Every task carries a pointer to a stop_node; a task
// awaited with plain `co_await` shares its parent's node, while scopes that
// cancel part of the tree (when_any, timeout, task_group, with_stop_token,
// spawned roots) own a node linked under their parent's. A leaf operation that
// suspends registers a cancel_hook on its node; request_stop() unlinks each
// hook and calls it once.
//
// Threading: a node and everything linked to it belong to one loop and are
// touched only on that loop's thread. Stop requests from other threads are
// posted to the loop first (see cancel.hpp, runtime shutdown).

namespace tandem::detail {

class stop_node;

/// Called once when the node it is linked to is stopped. It must not resume a
/// coroutine inline: it schedules, or submits an IORING_OP_ASYNC_CANCEL.
struct cancel_hook {
    void (*on_cancel)(cancel_hook*) noexcept = nullptr;
    cancel_hook* next_ = nullptr;
    cancel_hook* prev_ = nullptr;
    stop_node* owner_ = nullptr;

    bool linked() const noexcept { return owner_ != nullptr; }
    inline void unlink() noexcept;
};

class stop_node {
public:
    stop_node() noexcept { as_child_.on_cancel = &stop_child; }
    explicit stop_node(stop_node* parent) noexcept : stop_node() { attach(parent); }
    ~stop_node() { as_child_.unlink(); }
    stop_node(const stop_node&) = delete;
    stop_node& operator=(const stop_node&) = delete;

    /// Links this node under `parent` (may be null); a stopped parent stops it now.
    void attach(stop_node* parent) noexcept {
        as_child_.unlink();
        if (parent == nullptr) return;
        if (parent->requested_) {
            request_stop();
        } else {
            parent->link(&as_child_);
        }
    }

    bool stop_requested() const noexcept { return requested_; }

    /// Idempotent. Calls every linked hook once (most recently linked first).
    void request_stop() noexcept {
        requested_ = true;
        while (cancel_hook* h = head_) {
            h->unlink();
            h->on_cancel(h);
        }
    }

    /// Registers `h`; returns false (and does not link) when already stopped.
    bool link(cancel_hook* h) noexcept {
        if (requested_) return false;
        h->owner_ = this;
        h->prev_ = nullptr;
        h->next_ = head_;
        if (head_ != nullptr) head_->prev_ = h;
        head_ = h;
        return true;
    }

private:
    friend struct cancel_hook;
    static void stop_child(cancel_hook* h) noexcept {
        // as_child_ is the first member, so the hook's address is the node's.
        reinterpret_cast<stop_node*>(h)->request_stop();
    }

    cancel_hook as_child_;
    cancel_hook* head_ = nullptr;
    bool requested_ = false;
};

inline void cancel_hook::unlink() noexcept {
    if (owner_ == nullptr) return;
    if (prev_ != nullptr) {
        prev_->next_ = next_;
    } else {
        owner_->head_ = next_;
    }
    if (next_ != nullptr) next_->prev_ = prev_;
    owner_ = nullptr;
    next_ = prev_ = nullptr;
}

}  // namespace tandem::detail
