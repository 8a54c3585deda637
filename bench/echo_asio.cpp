// SPDX-License-Identifier: MIT
// The Asio echo server (echo_servers.hpp): C++20 coroutines on one io_context,
// written the way Asio's own examples (cpp20/coroutines/echo_server.cpp) do.
#include "echo_servers.hpp"

// Asio 1.22 turns co_await on for clang only when it finds libc++'s
// <experimental/coroutine>; clang with libstdc++'s <coroutine> works as well.
#if defined(__clang__) && !defined(ASIO_HAS_CO_AWAIT) && __has_include(<coroutine>)
#define ASIO_HAS_CO_AWAIT 1
#endif
#include <asio.hpp>

#include <future>
#include <thread>
#include <vector>

namespace echo::detail {

namespace {

asio::awaitable<void> echo_connection(asio::ip::tcp::socket s) {
    std::vector<char> buf(buffer_size);
    try {
        for (;;) {
            const std::size_t n =
                co_await s.async_read_some(asio::buffer(buf), asio::use_awaitable);
            co_await asio::async_write(s, asio::buffer(buf.data(), n), asio::use_awaitable);
        }
    } catch (const std::system_error&) {
        // end of stream (asio::error::eof), or the client's reset
    }
}

asio::awaitable<void> serve(asio::ip::tcp::acceptor acceptor) {
    for (;;) {
        asio::ip::tcp::socket s = co_await acceptor.async_accept(asio::use_awaitable);
        asio::co_spawn(acceptor.get_executor(), echo_connection(std::move(s)), asio::detached);
    }
}

class asio_server final : public server {
public:
    explicit asio_server(int cpu) {
        asio::ip::tcp::acceptor acceptor(ctx_, {asio::ip::address_v4::loopback(), 0});
        port_ = acceptor.local_endpoint().port();
        asio::co_spawn(ctx_, serve(std::move(acceptor)), asio::detached);
        std::promise<void> ready;
        std::future<void> started = ready.get_future();
        thread_ = std::thread([this, cpu, &ready] {
            try {
                attach_thread(cpu);
                ready.set_value();  // the last touch of `ready`: the constructor returns
            } catch (...) {
                ready.set_exception(std::current_exception());
                return;
            }
            ctx_.run();
        });
        try {
            started.get();
        } catch (...) {
            thread_.join();
            throw;
        }
    }
    // Stopping leaves the coroutines suspended; the io_context's destructor
    // destroys them, which closes their sockets.
    ~asio_server() override {
        ctx_.stop();
        thread_.join();
    }

private:
    asio::io_context ctx_{1};  // one thread: Asio skips some locking
    std::thread thread_;
};

}  // namespace

std::unique_ptr<server> start_asio_server(int cpu) {
    return std::make_unique<asio_server>(cpu);
}

}  // namespace echo::detail
