// SPDX-License-Identifier: MIT

// TCP over io_uring with real sockets on 127.0.0.1: an echo server and
// thousands of clients in one process, refused connections, writes to a
// vanished peer (no SIGPIPE), a peer reset, cancelled and closed pending
// receives, the multishot accept holding early connections, and fd leaks over
// many connect/close cycles.

#include <tandem/tandem.hpp>

#include <catch2/catch.hpp>

#include "support.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <stop_token>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

namespace {

using namespace std::chrono_literals;

tandem::runtime_options options(unsigned io_threads = 1) {
    tandem::runtime_options o;
    o.io_threads = io_threads;
    o.processes.enabled = false;  // no process pool needed here
    return o;
}

std::size_t open_fds() {
    return dir_entries("/proc/self/fd").size();
}

/// Enough fds for thousands of connections (each costs two here).
void raise_fd_limit() {
    rlimit limit{};
    ::getrlimit(RLIMIT_NOFILE, &limit);
    if (limit.rlim_max != RLIM_INFINITY && limit.rlim_max < 65536) {
        rlimit raised{65536, 65536};  // allowed with CAP_SYS_RESOURCE (CI runs as root)
        if (::setrlimit(RLIMIT_NOFILE, &raised) == 0) return;
    }
    limit.rlim_cur = limit.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &limit);
    ::getrlimit(RLIMIT_NOFILE, &limit);
    INFO("RLIMIT_NOFILE is " << limit.rlim_cur << "; these tests need about 4,200 fds");
    REQUIRE((limit.rlim_cur == RLIM_INFINITY || limit.rlim_cur >= 4200));
}

/// Echoes until the client shuts down its side, then closes.
tandem::task<> echo_connection(tandem::tcp_stream s) {
    std::vector<std::byte> buf(16 * 1024);
    for (;;) {
        const std::size_t n = co_await s.read_some(buf);
        if (n == 0) break;
        co_await s.write_all(std::span(buf).first(n));
    }
}

tandem::task<> echo_server(tandem::tcp_listener* listener, int connections) {
    tandem::task_group group;
    for (int i = 0; i < connections; ++i) group.spawn(echo_connection(co_await listener->accept()));
    co_await group.join();
}

tandem::task<bool> echo_client(tandem::address to, unsigned seed, std::size_t bytes) {
    tandem::tcp_stream s = co_await tandem::tcp_stream::connect(to);
    const auto sent = pattern(bytes, seed);
    std::vector<std::byte> back(bytes);
    // Write and read at once: a large message would fill both socket buffers otherwise.
    auto writer = [](tandem::tcp_stream* s, const std::vector<std::byte>* data) -> tandem::task<> {
        co_await s->write_all(*data);
        co_await s->shutdown_write();
    };
    co_await tandem::when_all(writer(&s, &sent), s.read_exact(back));
    std::byte extra[1];
    const std::size_t after = co_await s.read_some(extra);  // then end of stream
    co_return back == sent&& after == 0;
}

tandem::task<int> echo_many(int connections, std::size_t bytes) {
    auto listener = tandem::tcp_listener::bind(tandem::address::loopback(0));
    const tandem::address at = listener.local_address();
    std::vector<tandem::task<bool>> clients;
    for (int i = 0; i < connections; ++i) {
        clients.push_back(echo_client(at, static_cast<unsigned>(i), bytes));
    }
    auto [ok, server] = co_await tandem::when_all(tandem::when_all(std::move(clients)),
                                                  echo_server(&listener, connections));
    (void)server;
    int good = 0;
    for (bool b : ok) good += b ? 1 : 0;
    co_return good;
}

template <class T>
tandem::task<std::optional<std::string>> error_of(tandem::task<T> t) {
    try {
        co_await std::move(t);
    } catch (const std::system_error& e) {
        co_return "system_error " + std::to_string(e.code().value()) + ": " + e.what();
    } catch (const std::exception& e) {
        co_return std::string(typeid(e).name()) + ": " + e.what();
    }
    co_return std::nullopt;
}

}  // namespace

TEST_CASE("2,000 concurrent echo connections deliver every byte, on one io thread", "[net]") {
    raise_fd_limit();
    const std::size_t before = open_fds();
    CHECK(tandem::run(echo_many(2000, 1024), options(1)) == 2000);
    CHECK(open_fds() == before);
}

TEST_CASE("echo connections with large messages deliver every byte, on two io threads", "[net]") {
    raise_fd_limit();
    tandem::runtime rt(options(2));
    // Two servers, one per loop, each with its own clients: loops do not share sockets.
    std::atomic<int> good{0};
    std::thread other([&] { good += rt.block_on(echo_many(200, 256 * 1024)); });
    good += rt.block_on(echo_many(200, 256 * 1024));
    other.join();
    CHECK(good.load() == 400);
}

TEST_CASE("connecting to a closed port throws ECONNREFUSED naming the address", "[net]") {
    auto refused = []() -> tandem::task<std::optional<std::string>> {
        tandem::address at;
        {
            auto l = tandem::tcp_listener::bind(tandem::address::loopback(0));
            at = l.local_address();
        }  // closed: nobody listens there now
        co_return co_await error_of(tandem::tcp_stream::connect(at));
    };
    const auto err = tandem::run(refused(), options());
    REQUIRE(err);
    CHECK_THAT(*err, Catch::StartsWith("system_error " + std::to_string(ECONNREFUSED)));
    CHECK_THAT(*err, Catch::Contains("127.0.0.1:"));
}

namespace {
/// The server accepts and closes at once (after `linger_reset`: with an RST).
tandem::task<std::optional<std::string>> talk_to_vanished_peer(bool linger_reset, bool write) {
    auto listener = tandem::tcp_listener::bind(tandem::address::loopback(0));
    tandem::tcp_stream client = co_await tandem::tcp_stream::connect(listener.local_address());
    {
        tandem::tcp_stream server = co_await listener.accept();
        if (linger_reset) {
            const linger l{1, 0};
            ::setsockopt(server.native_handle(), SOL_SOCKET, SO_LINGER, &l, sizeof l);
        }
    }
    co_await tandem::sleep_for(10ms);  // the FIN or RST arrives
    auto keep_talking = [](tandem::tcp_stream* s, bool write) -> tandem::task<> {
        std::vector<std::byte> data(64 * 1024);
        for (int i = 0; i < 1000; ++i) {
            if (write) {
                co_await s->write_all(data);
            } else if (co_await s->read_some(data) == 0) {
                throw tandem::end_of_stream();
            }
        }
    };
    co_return co_await error_of(keep_talking(&client, write));
}
}  // namespace

TEST_CASE("writing to a peer that closed gives EPIPE or ECONNRESET, and no SIGPIPE", "[net]") {
    const auto err = tandem::run(talk_to_vanished_peer(false, true), options());
    REQUIRE(err);
    const bool expected = err->find("system_error " + std::to_string(EPIPE)) == 0 ||
                          err->find("system_error " + std::to_string(ECONNRESET)) == 0;
    CHECK(expected);
    CAPTURE(*err);
}

TEST_CASE("a peer reset (SO_LINGER 0) fails the next receive with ECONNRESET", "[net]") {
    const auto err = tandem::run(talk_to_vanished_peer(true, false), options());
    REQUIRE(err);
    CHECK_THAT(*err, Catch::StartsWith("system_error " + std::to_string(ECONNRESET)));
}

namespace {
tandem::task<std::string> cancelled_then_used() {
    auto listener = tandem::tcp_listener::bind(tandem::address::loopback(0));
    tandem::tcp_stream client = co_await tandem::tcp_stream::connect(listener.local_address());
    tandem::tcp_stream server = co_await listener.accept();
    std::byte buf[16];
    // Nothing to read: the receive is pending in the kernel when the timeout cancels it.
    auto err = co_await error_of(tandem::timeout(20ms, client.read_some(buf)));
    std::string out = err.value_or("no error");
    const std::byte hello[] = {std::byte{'h'}, std::byte{'i'}};
    co_await server.write_all(hello);
    const std::size_t n = co_await client.read_some(buf);
    out += n == 2 && buf[0] == std::byte{'h'} ? " | then read 2" : " | then read wrong";
    co_return out;
}

tandem::task<std::string> closed_while_receiving() {
    auto listener = tandem::tcp_listener::bind(tandem::address::loopback(0));
    tandem::tcp_stream client = co_await tandem::tcp_stream::connect(listener.local_address());
    tandem::tcp_stream server = co_await listener.accept();
    auto reader = [](tandem::tcp_stream* s) -> tandem::task<std::optional<std::string>> {
        std::byte buf[16];
        co_return co_await error_of(s->read_some(buf));
    };
    auto closer = [](tandem::tcp_stream* s) -> tandem::task<> {
        co_await tandem::sleep_for(20ms);
        s->close();
    };
    auto [err, done] = co_await tandem::when_all(reader(&client), closer(&client));
    (void)done;
    co_return err.value_or("no error");
}
}  // namespace

TEST_CASE("a pending receive cancelled by a timeout leaves the stream usable", "[net]") {
    const std::string out = tandem::run(cancelled_then_used(), options());
    CHECK_THAT(out, Catch::Contains("timed_out"));
    CHECK_THAT(out, Catch::EndsWith("then read 2"));
}

TEST_CASE("closing a stream with a receive pending ends that receive instead of hanging", "[net]") {
    CHECK_THAT(tandem::run(closed_while_receiving(), options()),
               Catch::Contains("operation_cancelled"));
}

namespace {
tandem::task<std::pair<tandem::tcp_stream, tandem::tcp_stream>> connected_pair(
    tandem::tcp_listener* listener) {
    auto [in, out] = co_await tandem::when_all(
        listener->accept(), tandem::tcp_stream::connect(listener->local_address()));
    co_return std::pair(std::move(in), std::move(out));
}

tandem::task<std::size_t> receive(tandem::tcp_stream* s) {
    std::byte buf[8];
    co_return co_await s->read_some(buf);
}

tandem::task<std::size_t> receive_then_stop(tandem::tcp_stream* s, std::stop_source* stop) {
    const std::size_t n = co_await receive(s);
    stop->request_stop();  // same loop: reaches the other task's receive at once
    co_return n;
}

// Both receives find their byte already there, so both complete at submission
// and in one reap, the stopper's first: the stop reaches the reader's receive
// after it finished and before its task runs again.
tandem::task<std::string> stopped_between_completion_and_resumption() {
    auto listener = tandem::tcp_listener::bind(tandem::address::loopback(0));
    auto [a_in, a_out] = co_await connected_pair(&listener);
    auto [b_in, b_out] = co_await connected_pair(&listener);
    const std::byte one[1] = {std::byte{7}};
    co_await a_out.write_all(one);
    co_await b_out.write_all(one);
    std::stop_source stop;
    auto [stopper, reader] = co_await tandem::when_all(
        receive_then_stop(&b_in, &stop), tandem::with_stop_token(stop.get_token(), receive(&a_in)));
    co_await a_out.write_all(one);
    const std::size_t again = co_await receive(&a_in);  // the stream is still usable
    co_return std::to_string(stopper) + " " + std::to_string(reader) + " " + std::to_string(again);
}
}  // namespace

TEST_CASE("a stop after a receive completed, before its task ran, leaves the received bytes",
          "[net]") {
    CHECK(tandem::run(stopped_between_completion_and_resumption(), options()) == "1 1 1");
}

namespace {
tandem::task<int> early_connections(int n) {
    auto listener = tandem::tcp_listener::bind(tandem::address::loopback(0));
    std::vector<tandem::tcp_stream> clients;
    // Arm the multishot accept, then let n connections arrive before anyone asks.
    auto first = [](tandem::tcp_listener* l) -> tandem::task<tandem::tcp_stream> {
        co_return co_await l->accept();
    };
    auto [accepted, c] = co_await tandem::when_all(
        first(&listener), tandem::tcp_stream::connect(listener.local_address()));
    for (int i = 0; i < n; ++i) {
        clients.push_back(co_await tandem::tcp_stream::connect(listener.local_address()));
    }
    co_await tandem::sleep_for(20ms);
    int got = 0;
    for (int i = 0; i < n; ++i) got += (co_await listener.accept()).is_open() ? 1 : 0;
    co_return got + (accepted.is_open() && c.is_open() ? 1 : 0);
}

tandem::task<> connect_close_cycles(int n) {
    auto listener = tandem::tcp_listener::bind(tandem::address::loopback(0));
    auto server = [](tandem::tcp_listener* l, int n) -> tandem::task<> {
        for (int i = 0; i < n; ++i) (void)co_await l->accept();
    };
    auto clients = [](tandem::address at, int n) -> tandem::task<> {
        for (int i = 0; i < n; ++i) {
            tandem::tcp_stream s = co_await tandem::tcp_stream::connect(at);
            s.close();
        }
    };
    co_await tandem::when_all(server(&listener, n), clients(listener.local_address(), n));
}
}  // namespace

TEST_CASE("connections that arrive before accept() is called are held and handed out", "[net]") {
    CHECK(tandem::run(early_connections(50), options()) == 51);
}

TEST_CASE("10,000 connect/close cycles leak no fd", "[net]") {
    const std::size_t before = open_fds();
    tandem::run(connect_close_cycles(10'000), options());
    CHECK(open_fds() == before);
}

TEST_CASE("read_exact throws end_of_stream when the peer ends early; read_some returns 0",
          "[net]") {
    auto body = []() -> tandem::task<std::string> {
        auto listener = tandem::tcp_listener::bind(tandem::address::loopback(0));
        tandem::tcp_stream client = co_await tandem::tcp_stream::connect(listener.local_address());
        tandem::tcp_stream server = co_await listener.accept();
        const std::byte three[3] = {};
        co_await server.write_all(three);
        co_await server.shutdown_write();
        std::byte buf[8];
        auto err = co_await error_of(client.read_exact(buf));
        const std::size_t after = co_await client.read_some(buf);
        co_return err.value_or("no error") + " | then " + std::to_string(after);
    };
    const std::string out = tandem::run(body(), options());
    CHECK_THAT(out, Catch::Contains("end_of_stream"));
    CHECK_THAT(out, Catch::EndsWith("then 0"));
}

// ---- EMFILE on accept ---------------------------------------------------------------------------

namespace {

bool started_as_child() {
    return std::getenv("TANDEM_NET_TEST_CHILD") != nullptr;
}

/// Accepts one connection while the fd table is full, then frees one fd after
/// 50 ms: accept() must back off and succeed then. Exit status 0 on success.
tandem::task<int> accept_when_out_of_fds(tandem::tcp_listener* listener, std::vector<int>* filler) {
    auto free_one_later = [](std::vector<int>* fds) -> tandem::task<> {
        co_await tandem::sleep_for(50ms);
        ::close(fds->back());
        fds->pop_back();
    };
    auto accept_one = [](tandem::tcp_listener* l) -> tandem::task<bool> {
        tandem::tcp_stream s = co_await tandem::timeout(10s, l->accept());
        co_return s.is_open();
    };
    auto [ok, freed] = co_await tandem::when_all(accept_one(listener), free_one_later(filler));
    (void)freed;
    co_return ok ? 0 : 1;
}

}  // namespace

TEST_CASE("child: accepts while out of fds", "[.child_emfile]") {
    if (!started_as_child()) return;
    tandem::runtime rt(options());
    auto listener = tandem::tcp_listener::bind(tandem::address::loopback(0));
    const std::string port = std::to_string(listener.local_address().port()) + "\n";
    (void)!::write(STDOUT_FILENO, port.data(), port.size());
    // Wait for the parent's connection to be queued in the backlog, then fill the table.
    char go;
    if (::read(STDIN_FILENO, &go, 1) != 1) ::_exit(2);
    rlimit limit{};
    ::getrlimit(RLIMIT_NOFILE, &limit);
    limit.rlim_cur = open_fds() + 8;
    ::setrlimit(RLIMIT_NOFILE, &limit);
    std::vector<int> filler;
    for (int fd; (fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC)) >= 0;) filler.push_back(fd);
    if (errno != EMFILE) ::_exit(3);
    const int status = rt.block_on(accept_when_out_of_fds(&listener, &filler));
    ::_exit(status);
}

TEST_CASE("accept() waits out EMFILE and succeeds once an fd is free", "[net]") {
    int to_child[2], from_child[2];
    REQUIRE(::pipe(to_child) == 0);
    REQUIRE(::pipe(from_child) == 0);
    const pid_t pid =
        start_self("[.child_emfile]", "TANDEM_NET_TEST_CHILD=1", to_child[0], from_child[1]);
    REQUIRE(pid >= 0);
    ::close(to_child[0]);
    ::close(from_child[1]);
    char buf[32] = {};
    const ssize_t n = ::read(from_child[0], buf, sizeof buf - 1);
    REQUIRE(n > 0);
    const int port = std::atoi(buf);
    const int client = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in to{};
    to.sin_family = AF_INET;
    to.sin_port = htons(static_cast<std::uint16_t>(port));
    to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    CHECK(::connect(client, reinterpret_cast<const sockaddr*>(&to), sizeof to) == 0);
    (void)!::write(to_child[1], "g", 1);
    int status = 0;
    REQUIRE(::waitpid(pid, &status, 0) == pid);
    ::close(client);
    ::close(to_child[1]);
    ::close(from_child[0]);
    REQUIRE(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
}

TEST_CASE("accept() in a task already cancelled throws operation_cancelled at once", "[net]") {
    auto body = []() -> tandem::task<std::string> {
        auto listener = tandem::tcp_listener::bind(tandem::address::loopback(0));
        // when_any cancels the accept as soon as the other task finishes.
        auto r = co_await tandem::when_any(listener.accept(), tandem::yield());
        co_return r.index() == 1 ? "yield won" : "accept won";
    };
    CHECK(tandem::run(body(), options()) == "yield won");
    auto cancelled_first = []() -> tandem::task<std::optional<std::string>> {
        auto listener = tandem::tcp_listener::bind(tandem::address::loopback(0));
        std::stop_source stop;
        stop.request_stop();
        co_return co_await error_of(tandem::with_stop_token(stop.get_token(), listener.accept()));
    };
    const auto err = tandem::run(cancelled_first(), options());
    REQUIRE(err);
    CHECK_THAT(*err, Catch::Contains("operation_cancelled"));
}

// ---- Unix-domain streams and UDP --------------------------------------------------------------

TEST_CASE("tcp_stream and tcp_listener work on a unix: address", "[net]") {
    const std::string path = "/tmp/tandem-net-test-" + std::to_string(::getpid()) + ".sock";
    ::unlink(path.c_str());
    auto body = [](std::string path) -> tandem::task<bool> {
        auto listener = tandem::tcp_listener::bind(tandem::address::parse("unix:" + path));
        const tandem::address at = listener.local_address();
        auto [ok, server] =
            co_await tandem::when_all(echo_client(at, 7, 100'000), echo_server(&listener, 1));
        (void)server;
        co_return ok&& at.to_string() == "unix:" + path;
    };
    CHECK(tandem::run(body(path), options()));
    ::unlink(path.c_str());
}

namespace {
tandem::task<std::string> udp_round_trip() {
    auto server = tandem::udp_socket::bind(tandem::address::loopback(0));
    auto client = tandem::udp_socket::bind(tandem::address::loopback(0));
    auto echo_once = [](tandem::udp_socket* s) -> tandem::task<> {
        std::byte buf[2048];
        tandem::address from;
        const std::size_t n = co_await s->receive_from(buf, from);
        co_await s->send_to(std::span(buf, n), from);
    };
    const auto sent = pattern(1200, 3);
    std::vector<std::byte> back(2048);
    tandem::address from;
    auto [served, sent_n, got] =
        co_await tandem::when_all(echo_once(&server), client.send_to(sent, server.local_address()),
                                  client.receive_from(back, from));
    (void)served;
    back.resize(got);
    std::string out = sent_n == 1200 && back == sent ? "echoed" : "wrong";
    out += from == server.local_address() ? " from the server" : " from elsewhere";
    // A receive with nothing to read, cut short by a timeout, then closed.
    auto err = co_await error_of(tandem::timeout(20ms, client.receive_from(back, from)));
    out += " | " + err.value_or("no error");
    co_return out;
}
}  // namespace

TEST_CASE("udp_socket sends and receives datagrams with their sender; receives are cancellable",
          "[net]") {
    const std::string out = tandem::run(udp_round_trip(), options());
    CHECK_THAT(out, Catch::StartsWith("echoed from the server"));
    CHECK_THAT(out, Catch::Contains("timed_out"));
}

namespace {
/// Connects to `at` and accepts that connection on `listener`; true if both ends match.
tandem::task<bool> connect_and_accept(tandem::tcp_listener* listener, tandem::address at) {
    auto [client, server] =
        co_await tandem::when_all(tandem::tcp_stream::connect(at), listener->accept());
    co_return server.peer_address().port() != 0 && client.is_open();
}
}  // namespace

// The listener's multishot accept state outlives a runtime it was used on; ASan's leak check
// and the fd count prove it is freed whichever of listener and runtime goes first.
TEST_CASE("a listener outliving its runtime, or closed from another thread, leaks nothing",
          "[net]") {
    const std::size_t fds_before = open_fds();
    {
        auto listener = tandem::tcp_listener::bind(tandem::address::loopback(0));
        const tandem::address at = listener.local_address();
        CHECK(tandem::run(connect_and_accept(&listener, at), options()));
        // The first runtime is gone; a second one takes over the listener.
        CHECK(tandem::run(connect_and_accept(&listener, at), options()));
    }  // closed after both runtimes
    CHECK(open_fds() == fds_before);
    {
        tandem::runtime rt(options());
        auto listener = tandem::tcp_listener::bind(tandem::address::loopback(0));
        const tandem::address at = listener.local_address();
        CHECK(rt.block_on(connect_and_accept(&listener, at)));
        listener.close();  // from this thread, while the loop runs: the loop cancels the accept
        CHECK_FALSE(listener.is_open());
    }
    CHECK(open_fds() == fds_before);
}
