// SPDX-License-Identifier: MIT
// The per-thread frame cache behind promise_base::operator new / delete.
//
// A frame freed on another thread than the one that allocated it joins the
// freeing thread's cache. A thread's cache holds at most `budget` bytes, so a
// burst (100,000 sleepers) gives most of its memory back to malloc instead of
// hoarding it, while bursts of a few thousand tasks are served from the cache
// (bench/sync_bench: spawning in batches of 1,024 cost 50 ns a task with 256
// frames per size class, against 30 ns in batches of 256). Off under the sanitizers, which must see
// every allocation.
#include <tandem/detail/frame_pool.hpp>

#include <new>

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define TANDEM_FRAME_POOL 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define TANDEM_FRAME_POOL 0
#endif
#endif
#ifndef TANDEM_FRAME_POOL
#define TANDEM_FRAME_POOL 1
#endif

namespace tandem::detail {

#if TANDEM_FRAME_POOL

namespace {

class frame_cache {
public:
    static constexpr std::size_t granule = 16;
    static constexpr std::size_t classes = 32;  // frames up to 512 bytes
    static constexpr std::size_t budget = 1 << 20;

    static std::size_t size_class(std::size_t n) noexcept { return (n - 1) / granule; }

    void* take(std::size_t c) noexcept {
        if (c >= classes || heads_[c] == nullptr) return nullptr;
        block* b = heads_[c];
        heads_[c] = b->next;
        bytes_ -= (c + 1) * granule;
        return b;
    }

    bool give(void* p, std::size_t c) noexcept {
        if (dead_ || c >= classes || bytes_ + (c + 1) * granule > budget) return false;
        if (!registered_) register_cleanup();
        auto* b = static_cast<block*>(p);
        b->next = heads_[c];
        heads_[c] = b;
        bytes_ += (c + 1) * granule;
        return true;
    }

private:
    struct block {
        block* next;
    };
    struct cleanup {
        frame_cache* cache;
        ~cleanup() { cache->drain(); }
    };

    void register_cleanup() noexcept {
        registered_ = true;
        thread_local cleanup c{this};
        (void)c;
    }

    // At thread exit: free everything and stop caching (frames freed later
    // in this thread's exit go straight to operator delete).
    void drain() noexcept {
        dead_ = true;
        for (std::size_t c = 0; c < classes; ++c) {
            while (block* b = heads_[c]) {
                heads_[c] = b->next;
                ::operator delete(b);
            }
        }
        bytes_ = 0;
    }

    block* heads_[classes] = {};
    std::size_t bytes_ = 0;  // cached, over all classes
    bool registered_ = false;
    bool dead_ = false;
};

// Trivially destructible, so usable from other thread_local destructors.
// initial-exec: a plain %fs-relative access instead of a __tls_get_addr call
// per frame (libtandem is linked at start-up, not dlopen()ed late).
[[gnu::tls_model("initial-exec")]] thread_local frame_cache tls_cache;

}  // namespace

void* frame_alloc(std::size_t n) {
    std::size_t c = frame_cache::size_class(n);
    if (void* p = tls_cache.take(c)) return p;
    // Allocate the whole class size so the block fits any frame of its class.
    return ::operator new(c < frame_cache::classes ? (c + 1) * frame_cache::granule : n);
}

void frame_free(void* p, std::size_t n) noexcept {
    if (!tls_cache.give(p, frame_cache::size_class(n))) ::operator delete(p);
}

#else

void* frame_alloc(std::size_t n) {
    return ::operator new(n);
}
void frame_free(void* p, std::size_t) noexcept {
    ::operator delete(p);
}

#endif

}  // namespace tandem::detail
