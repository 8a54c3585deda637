// SPDX-License-Identifier: MIT
// 03_tcp_echo: a TCP echo server and its clients, each connection a plain
// coroutine on one io thread. The server accepts on 127.0.0.1 (a free port),
// echoes until the client shuts down its side; N clients run at once, send a
// message, read it back and check it.
// Run: build/examples/03_tcp_echo [clients]   (default: 1000)
#include <tandem/tandem.hpp>

#include <sys/resource.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>
#include <vector>

// One connection: echo what arrives until the peer ends its side.
tandem::task<> echo(tandem::tcp_stream s) {
    std::vector<std::byte> buf(4096);
    for (;;) {
        const std::size_t n = co_await s.read_some(buf);
        if (n == 0) co_return;  // the client shut down its side: done
        co_await s.write_all(std::span(buf).first(n));
    }
}

tandem::task<> serve(tandem::tcp_listener* listener, int connections) {
    tandem::task_group group;  // the handlers run side by side; join waits for all
    for (int i = 0; i < connections; ++i) group.spawn(echo(co_await listener->accept()));
    co_await group.join();
}

tandem::task<bool> client(tandem::address server, int id) {
    tandem::tcp_stream s = co_await tandem::tcp_stream::connect(server);
    const std::string text = "hello from client " + std::to_string(id);
    co_await s.write_all(std::as_bytes(std::span(text)));
    co_await s.shutdown_write();
    std::string back(text.size(), '\0');
    co_await s.read_exact(std::as_writable_bytes(std::span(back)));
    co_return back == text;
}

tandem::task<int> run_all(int clients) {
    auto listener = tandem::tcp_listener::bind(tandem::address::loopback(0));
    std::vector<tandem::task<bool>> all;
    for (int i = 0; i < clients; ++i) all.push_back(client(listener.local_address(), i));
    auto [results, served] =
        co_await tandem::when_all(tandem::when_all(std::move(all)), serve(&listener, clients));
    (void)served;
    int ok = 0;
    for (bool r : results) ok += r ? 1 : 0;
    co_return ok;
}

int main(int argc, char** argv) {
    const int clients = argc > 1 ? std::atoi(argv[1]) : 1000;
    // Each connection costs two fds here (client and server side): lift the soft limit.
    rlimit limit{};
    ::getrlimit(RLIMIT_NOFILE, &limit);
    limit.rlim_cur = limit.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &limit);
    tandem::runtime_options options;
    options.processes.enabled = false;  // no CPU offload here
    try {
        const auto start = std::chrono::steady_clock::now();
        const int ok = tandem::run(run_all(clients), options);
        const double ms =
            std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
                .count();
        std::printf("%d of %d clients got their message back in %.1f ms, on one thread\n", ok,
                    clients, ms);
        std::printf("%s\n", ok == clients ? "ok" : "FAILED");
        return ok == clients ? 0 : 1;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "error: %s\n", e.what());
        return 1;
    }
}
