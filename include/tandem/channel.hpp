// SPDX-License-Identifier: MIT
#pragma once

/// \file
/// `channel<T>`: a bounded multi-producer, multi-consumer queue between tasks
/// (Python's asyncio.Queue with a maximum size, and its `None` sentinel as
/// `close()`). The threading, cancellation and lifetime rules of sync.hpp
/// apply: tasks on different io threads may share a channel, a waiting task
/// resumes on its own loop, and a cancelled wait takes no item with it.

#include <tandem/detail/sync_waiter.hpp>
#include <tandem/error.hpp>
#include <tandem/task.hpp>

#include <cstddef>
#include <memory>
#include <optional>
#include <type_traits>
#include <utility>

namespace tandem {

/// A bounded FIFO of `T`s.
///
/// - Order: items come out in the order they went in; waiting senders and
///   waiting receivers are each served first come, first served.
/// - Backpressure: `send` waits while `capacity` items are queued. A capacity
///   of 0 makes every send wait for a receiver (a rendezvous, as Go's
///   unbuffered channels).
/// - Closing: after `close()`, receivers still get every queued item, then
///   `std::nullopt`; `send` and `try_send` throw `channel_closed`, and senders
///   waiting at the close throw it too (their items were never queued).
/// - Cancellation: a cancelled `send` throws `operation_cancelled` and its
///   item was not queued; a cancelled `receive` throws it and took no item.
///   A receiver handed an item before its cancellation arrived returns it.
/// - Memory: room for `capacity` items is reserved (not touched) up front;
///   nothing is allocated per item.
///
/// T must be nothrow-move-constructible (items move under a spin lock).
template <class T>
class channel {
    static_assert(std::is_nothrow_move_constructible_v<T>,
                  "tandem::channel<T> needs a nothrow move constructor");

public:
    explicit channel(std::size_t capacity)
        : capacity_(capacity), items_(capacity == 0 ? nullptr : alloc_.allocate(capacity)) {}
    ~channel();
    channel(const channel&) = delete;
    channel& operator=(const channel&) = delete;

    /// Queues `value`, waiting while the channel is full. Throws
    /// `channel_closed` if the channel is or becomes closed before the item
    /// is queued, `operation_cancelled` if cancelled while waiting.
    task<> send(T value) {
        send_op op(this, &value);
        co_await op;
    }

    /// The next item; waits while the channel is empty. `std::nullopt` once
    /// the channel is closed and drained. Throws `operation_cancelled` if
    /// cancelled while waiting.
    task<std::optional<T>> receive() { co_return co_await receive_op(this); }

    /// Queues `value` (moving from it) if that needs no waiting; returns false
    /// and leaves `value` alone when the channel is full. Throws
    /// `channel_closed` on a closed channel. Any thread.
    bool try_send(T& value);

    /// The next item if one is there now, else `std::nullopt` (empty, or
    /// closed and drained: `is_closed()` tells which). Any thread.
    std::optional<T> try_receive() noexcept;

    /// No more sends; wakes every waiting receiver (with `std::nullopt`, once
    /// drained) and sender (with `channel_closed`). Idempotent; any thread.
    void close() noexcept;

    bool is_closed() const noexcept {
        detail::spin_guard guard(lock_);
        return closed_;
    }
    /// Items queued at this instant.
    std::size_t size() const noexcept {
        detail::spin_guard guard(lock_);
        return count_;
    }
    std::size_t capacity() const noexcept { return capacity_; }

private:
    using state = detail::sync_waiter::state;

    struct send_op : detail::wait_op<send_op> {
        channel* ch;
        T* item;
        send_op(channel* c, T* v) noexcept : ch(c), item(v) {}
        detail::spin_lock& lock_ref() noexcept { return ch->lock_; }
        detail::wait_queue& queue_ref() noexcept { return ch->senders_; }
        bool try_now(detail::wake_list& woken) noexcept { return ch->send_now(*this, woken); }
        void await_resume() {
            const state s = this->outcome();
            if (s == state::closed) throw channel_closed();
            if (s == state::cancelled) throw operation_cancelled();
        }
    };

    struct receive_op : detail::wait_op<receive_op> {
        channel* ch;
        std::optional<T> value;
        explicit receive_op(channel* c) noexcept : ch(c) {}
        detail::spin_lock& lock_ref() noexcept { return ch->lock_; }
        detail::wait_queue& queue_ref() noexcept { return ch->receivers_; }
        bool try_now(detail::wake_list& woken) noexcept { return ch->receive_now(value, woken); }
        std::optional<T> await_resume() {
            if (this->outcome() == state::cancelled) throw operation_cancelled();
            return std::move(value);  // empty when closed
        }
    };

    // Under the lock. Hands the item to a waiting receiver, or queues it.
    bool send_now(send_op& op, detail::wake_list& woken) noexcept {
        if (closed_) {
            op.st = state::closed;
            return true;
        }
        if (!receivers_.empty()) {
            auto* r = static_cast<receive_op*>(receivers_.pop_front());
            r->value.emplace(std::move(*op.item));
            woken.add(r, state::woken);
            return true;
        }
        if (count_ == capacity_) return false;
        push(std::move(*op.item));
        return true;
    }

    // Under the lock. Takes the oldest item, refilling from a waiting sender.
    bool receive_now(std::optional<T>& out, detail::wake_list& woken) noexcept {
        if (count_ != 0) {
            out.emplace(pop());
            if (!senders_.empty()) {
                auto* s = static_cast<send_op*>(senders_.pop_front());
                push(std::move(*s->item));
                woken.add(s, state::woken);
            }
            return true;
        }
        if (!senders_.empty()) {  // capacity 0: straight from the sender
            auto* s = static_cast<send_op*>(senders_.pop_front());
            out.emplace(std::move(*s->item));
            woken.add(s, state::woken);
            return true;
        }
        return closed_;  // closed and drained: out stays empty
    }

    void push(T&& v) noexcept {
        std::size_t tail = head_ + count_;
        if (tail >= capacity_) tail -= capacity_;
        std::construct_at(items_ + tail, std::move(v));
        ++count_;
    }

    T pop() noexcept {
        T v(std::move(items_[head_]));
        std::destroy_at(items_ + head_);
        if (++head_ == capacity_) head_ = 0;
        --count_;
        return v;
    }

    mutable detail::spin_lock lock_;
    detail::wait_queue senders_;
    detail::wait_queue receivers_;
    [[no_unique_address]] std::allocator<T> alloc_;
    std::size_t capacity_;
    T* items_;  // a ring of capacity_ slots, count_ of them live from head_
    std::size_t head_ = 0;
    std::size_t count_ = 0;
    bool closed_ = false;
};

template <class T>
channel<T>::~channel() {
    if (!senders_.empty() || !receivers_.empty()) {
        detail::destroyed_with_waiters("tandem::channel destroyed while tasks wait on it");
    }
    while (count_ != 0) (void)pop();
    if (items_ != nullptr) alloc_.deallocate(items_, capacity_);
}

template <class T>
bool channel<T>::try_send(T& value) {
    detail::wake_list woken;
    detail::spin_guard guard(lock_);
    if (closed_) throw channel_closed();
    send_op op(this, &value);
    return send_now(op, woken);
}

template <class T>
std::optional<T> channel<T>::try_receive() noexcept {
    std::optional<T> out;
    detail::wake_list woken;
    detail::spin_guard guard(lock_);
    receive_now(out, woken);
    return out;
}

template <class T>
void channel<T>::close() noexcept {
    detail::wake_list woken;
    detail::spin_guard guard(lock_);
    closed_ = true;
    woken.add_all(receivers_, state::closed);  // receivers wait only when nothing is queued
    woken.add_all(senders_, state::closed);
}

}  // namespace tandem
