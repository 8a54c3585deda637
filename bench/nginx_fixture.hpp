// SPDX-License-Identifier: MIT
#pragma once

// nginx_fixture::nginx_server: a real nginx on 127.0.0.1, for tests and benchmarks that need
// an HTTP/1.1 server tandem did not write. Header-only; no tandem dependency.
//
//   nginx_fixture::nginx_server web({.files = {{"index.html", std::string(1024, 'x')}}});
//   web.url("/index.html")    // "http://127.0.0.1:<port>/index.html"
//
// Locations (<file> is any file under root(): the ones `files` named, or written there later;
// nothing is cached, so a file written while nginx runs is served at once):
//   /<file>            the file; Content-Length; keep-alive (1,000,000 requests, 300 s idle)
//   /chunked/<file>    the same bytes with Transfer-Encoding: chunked (for HTTP/1.1 requests;
//                      HTTP/1.0 gets a body delimited by close), in chunks of at most
//                      `chunk_bytes`; no Content-Length, Last-Modified or ETag. An EMPTY file
//                      is the exception: Content-Length: 0. (sub_filter on every type, with a
//                      pattern that is its own replacement: nginx drops the length and chunks.)
//   /close/<file>      the file with Content-Length and "Connection: close"; nginx closes the
//                      connection after the response (keepalive_timeout 0)
//   /slow/<file>       the file at 1 KiB/s (the first KiB at once), for timeouts mid-body
//   /status/204, /status/500, /status/503   that status (500 and 503 with nginx's HTML body)
//   anything else      404 (a missing file), 405 for a POST to a file
// Load settings: worker_processes `workers`, worker_connections `worker_connections`,
// worker_rlimit_nofile to match (capped at the hard limit unless root), multi_accept, listen
// backlog = net.core.somaxconn, access_log off.
//
// Lifetime: the constructor starts nginx (master + workers, `daemon off`) as a child process
// in its own process group and returns once a worker has answered a request on the port;
// it throws std::runtime_error with nginx's own error text if nginx does not come up. The
// destructor stops nginx (SIGTERM: fast shutdown, SIGKILL to the group after 5 s), reaps it,
// and removes the temporary directory (config, logs, pid file, document root).
//
// If the process dies without running the destructor (SIGKILL, a meson timeout), nginx gets
// SIGTERM from the kernel (PR_SET_PDEATHSIG; its master then stops the workers), and the next
// nginx_server constructed on the machine removes the leftover directory. Caveat: the kernel
// sends that signal when the THREAD that forked exits, not the process, so destroy an
// nginx_server before the thread that constructed it ends (construct it on the main thread
// when in doubt); otherwise nginx stops early and requests fail with ECONNREFUSED.
// Not thread-safe; the accessors may be called from any thread once constructed.

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include <arpa/inet.h>
#include <fcntl.h>
#include <grp.h>
#include <netinet/in.h>
#include <poll.h>
#include <pwd.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

namespace nginx_fixture {

struct nginx_options {
    int workers = 1;
    /// Files to create under the document root: name (relative, may contain '/') -> content.
    std::vector<std::pair<std::string, std::string>> files = {};
    int worker_connections = 12000;
    int cpu = -1;                    ///< pin nginx, all its processes, to this CPU; -1: no pinning
    std::size_t chunk_bytes = 4096;  ///< the largest chunk /chunked/ sends
    std::chrono::milliseconds start_timeout{15000};  ///< per attempt (nginx retries bind 2.5 s)
};

class nginx_server {
public:
    /// Starts nginx; see the top of the file. Blocks until nginx answers (usually ~10 ms; up
    /// to start_timeout per attempt, 5 attempts on EADDRINUSE). Throws std::invalid_argument
    /// for bad options or file names, std::runtime_error (with nginx's stderr and error log)
    /// if nginx is missing, exits or does not answer, std::system_error if the OS refuses.
    explicit nginx_server(nginx_options options = {}) : options_(std::move(options)) {
        if (options_.workers < 1 || options_.worker_connections < 16 || options_.chunk_bytes < 1)
            throw std::invalid_argument("nginx_fixture: workers, worker_connections, chunk_bytes");
        remove_stale_dirs();
        if (binary().empty()) throw std::runtime_error("nginx_fixture: no nginx binary found");
        try {
            make_dir();
            start();
        } catch (...) {
            stop();
            throw;
        }
    }
    ~nginx_server() { stop(); }
    nginx_server(const nginx_server&) = delete;
    nginx_server& operator=(const nginx_server&) = delete;

    /// The nginx binary: $TANDEM_NGINX if set (only it: TANDEM_NGINX=none hides nginx), else
    /// /usr/sbin/nginx or the first nginx on $PATH; "" if none.
    static std::string binary() {
        std::vector<std::string> candidates;
        if (const char* env = std::getenv("TANDEM_NGINX"))
            return ::access(env, X_OK) == 0 ? env : "";
        candidates.emplace_back("/usr/sbin/nginx");
        if (const char* path = std::getenv("PATH")) {
            std::istringstream dirs(path);
            for (std::string dir; std::getline(dirs, dir, ':');)
                if (!dir.empty()) candidates.push_back(dir + "/nginx");
        }
        for (const std::string& c : candidates)
            if (::access(c.c_str(), X_OK) == 0) return c;
        return "";
    }
    static bool available() { return !binary().empty(); }

    int port() const { return port_; }
    /// "http://127.0.0.1:<port>" + path ('/' added in front if path lacks it).
    std::string url(std::string_view path) const {
        std::string u = "http://127.0.0.1:" + std::to_string(port_);
        if (path.empty() || path.front() != '/') u += '/';
        return u.append(path);
    }
    /// The document root: an absolute directory path, removed by the destructor.
    std::string root() const { return (dir_ / "www").string(); }
    /// The master process (its process group holds the workers).
    pid_t pid() const { return pid_; }
    /// What nginx wrote to stderr and its error log so far (warnings and up).
    std::string log_text() const {
        return read_file(dir_ / "stderr.log") + read_file(dir_ / "error.log");
    }

private:
    static constexpr const char* dir_prefix = "tandem-nginx-";

    static std::filesystem::path temp_base() {
        const char* t = std::getenv("TMPDIR");
        return t != nullptr && *t != '\0' ? t : "/tmp";
    }

    static std::string read_file(const std::filesystem::path& p) {
        std::ifstream in(p, std::ios::binary);
        return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
    }

    static void write_file(const std::filesystem::path& p, const std::string& text) {
        std::ofstream out(p, std::ios::binary | std::ios::trunc);
        out << text;
        if (!out.flush()) throw std::runtime_error("nginx_fixture: cannot write " + p.string());
    }

    /// Directories "tandem-nginx-<pid>-*" of ours whose process is gone: a killed run's.
    static void remove_stale_dirs() {
        std::error_code ec;
        for (const auto& e : std::filesystem::directory_iterator(temp_base(), ec)) {
            const std::string name = e.path().filename().string();
            if (name.rfind(dir_prefix, 0) != 0) continue;
            const long owner = std::atol(name.c_str() + std::string_view(dir_prefix).size());
            struct stat st {};
            if (owner <= 0 || ::stat(e.path().c_str(), &st) != 0 || st.st_uid != ::geteuid())
                continue;
            if (::kill(static_cast<pid_t>(owner), 0) != 0 && errno == ESRCH)
                std::filesystem::remove_all(e.path(), ec);
        }
    }

    void make_dir() {
        std::string templ =
            (temp_base() / dir_prefix).string() + std::to_string(::getpid()) + "-XXXXXX";
        if (::mkdtemp(templ.data()) == nullptr)
            throw std::system_error(errno, std::system_category(), "nginx_fixture: mkdtemp");
        dir_ = templ;
        std::filesystem::create_directories(dir_ / "www");
        std::filesystem::create_directories(dir_ / "tmp");
        for (const auto& [name, content] : options_.files) {
            const std::filesystem::path rel(name);
            if (rel.empty() || rel.is_absolute() ||
                std::find(rel.begin(), rel.end(), "..") != rel.end())
                throw std::invalid_argument("nginx_fixture: bad file name " + name);
            const std::filesystem::path p = dir_ / "www" / rel;
            std::filesystem::create_directories(p.parent_path());
            write_file(p, content);
        }
    }

    /// A port nobody listens on right now. Another process may take it before nginx binds
    /// it: start() then tries another.
    static int free_port() {
        const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        socklen_t len = sizeof a;
        int port = -1;
        if (fd >= 0 && ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 &&
            ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0)
            port = ntohs(a.sin_port);
        if (fd >= 0) ::close(fd);
        if (port < 0) throw std::system_error(errno, std::system_category(), "nginx_fixture: port");
        return port;
    }

    static long somaxconn() {
        long v = 0;
        std::ifstream("/proc/sys/net/core/somaxconn") >> v;
        return v > 0 ? v : 511;
    }

    std::string config() const {
        const std::string d = dir_.string();
        const auto q = [](const std::string& s) { return "\"" + s + "\""; };
        rlimit lim{};
        ::getrlimit(RLIMIT_NOFILE, &lim);
        // A static file request holds a socket and, briefly, the file.
        rlim_t nofile = static_cast<rlim_t>(options_.worker_connections) * 2 + 64;
        if (::geteuid() != 0 && lim.rlim_max != RLIM_INFINITY && nofile > lim.rlim_max)
            nofile = lim.rlim_max;
        std::ostringstream c;
        // As root the workers would switch to "nobody", who cannot read the 0700 directory.
        if (::geteuid() == 0) {
            const passwd* pw = ::getpwuid(::geteuid());
            const group* gr = ::getgrgid(::getegid());
            if (pw != nullptr && gr != nullptr)
                c << "user " << pw->pw_name << ' ' << gr->gr_name << ";\n";
        }
        c << "worker_processes " << options_.workers << ";\n"
          << "worker_rlimit_nofile " << nofile << ";\n"
          << "pid " << q(d + "/nginx.pid") << ";\nlock_file " << q(d + "/nginx.lock") << ";\n"
          << "error_log " << q(d + "/error.log") << " warn;\n"
          << "events { worker_connections " << options_.worker_connections
          << "; multi_accept on; }\n"
          << "http {\n  access_log off;\n";
        for (const char* t : {"client_body", "proxy", "fastcgi", "uwsgi", "scgi"})
            c << "  " << t << "_temp_path " << q(d + "/tmp/" + t) << ";\n";
        c << "  types { text/html html htm; text/plain txt; application/json json; }\n"
          << "  default_type application/octet-stream;\n"
          << "  keepalive_requests 1000000;\n  keepalive_timeout 300s;\n"
          << "  server {\n    listen 127.0.0.1:" << port_ << " backlog=" << somaxconn() << ";\n"
          << "    root " << q(d + "/www") << ";\n"
          << "    location / { }\n"
          << "    location /chunked/ { alias " << q(d + "/www/") << "; sub_filter_types *;"
          << " sub_filter '@@' '@@'; sub_filter_once off; output_buffers 2 " << options_.chunk_bytes
          << "; }\n"
          << "    location /close/ { alias " << q(d + "/www/") << "; keepalive_timeout 0; }\n"
          << "    location /slow/ { alias " << q(d + "/www/") << "; limit_rate 1024; }\n";
        for (int code : {204, 500, 503})
            c << "    location = /status/" << code << " { return " << code << "; }\n";
        c << "    location = /__nginx_fixture { return 200 " << q(token()) << "; }\n  }\n}\n";
        return c.str();
    }

    std::string token() const { return dir_.filename().string(); }

    void start() {
        for (int attempt = 1;; ++attempt) {
            port_ = free_port();
            write_file(dir_ / "nginx.conf", config());
            write_file(dir_ / "error.log", "");
            spawn();
            const std::string failure = wait_ready();
            if (failure.empty()) return;
            stop_process();
            if (failure.find("Address already in use") == std::string::npos || attempt == 5)
                throw std::runtime_error("nginx_fixture: nginx did not start (" + dir_.string() +
                                         "):\n" + failure);
        }
    }

    void spawn() {
        const std::string bin = binary(), prefix = dir_.string(), conf = prefix + "/nginx.conf";
        std::vector<const char*> argv = {bin.c_str(),  "-p", prefix.c_str(), "-c",
                                         conf.c_str(), "-g", "daemon off;",  nullptr};
        const int log =
            ::open((dir_ / "stderr.log").c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        const int null = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
        if (log < 0 || null < 0) {
            const int e = errno;
            if (log >= 0) ::close(log);
            if (null >= 0) ::close(null);
            throw std::system_error(e, std::system_category(), "nginx_fixture: open");
        }
        cpu_set_t cpus;
        CPU_ZERO(&cpus);
        if (options_.cpu >= 0) CPU_SET(static_cast<unsigned>(options_.cpu), &cpus);
        const pid_t parent = ::getpid();
        pid_ = ::fork();
        if (pid_ == 0) {  // only async-signal-safe calls until exec: the parent may have threads
            ::setpgid(0, 0);
            ::prctl(PR_SET_PDEATHSIG, SIGTERM);  // SIGTERM: the master stops its workers
            if (::getppid() != parent) ::_exit(127);
            sigset_t none;
            sigemptyset(&none);
            ::sigprocmask(SIG_SETMASK, &none, nullptr);
            for (int s : {SIGPIPE, SIGTERM, SIGINT, SIGQUIT, SIGHUP}) ::signal(s, SIG_DFL);
            if (options_.cpu >= 0) ::sched_setaffinity(0, sizeof cpus, &cpus);
            ::dup2(null, STDIN_FILENO);
            ::dup2(log, STDOUT_FILENO);
            ::dup2(log, STDERR_FILENO);
            ::syscall(SYS_close_range, 3U, ~0U, 0U);  // no fd of the test leaks into nginx
            ::execv(argv[0], const_cast<char* const*>(argv.data()));
            ::_exit(127);
        }
        const int fork_errno = errno;
        ::close(log);
        ::close(null);
        if (pid_ < 0) {
            pid_ = 0;
            throw std::system_error(fork_errno, std::system_category(), "nginx_fixture: fork");
        }
    }

    /// "" once our nginx answers on port_; otherwise why it will not.
    std::string wait_ready() {
        const auto deadline = std::chrono::steady_clock::now() + options_.start_timeout;
        while (std::chrono::steady_clock::now() < deadline) {
            siginfo_t info{};
            if (::waitid(P_PID, static_cast<id_t>(pid_), &info, WEXITED | WNOHANG | WNOWAIT) == 0 &&
                info.si_pid == pid_)
                return "nginx exited (status " + std::to_string(info.si_status) + "):\n" +
                       log_text();
            if (answers()) return "";
            std::this_thread::sleep_for(std::chrono::milliseconds(5));
        }
        return "no answer on port " + std::to_string(port_) + " within " +
               std::to_string(options_.start_timeout.count()) + " ms:\n" + log_text();
    }

    /// True if a worker of OUR nginx answers: another fixture may have taken the same port.
    /// Bounded: a full backlog elsewhere would make a blocking connect wait minutes.
    bool answers() const {
        const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0) return false;
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_port = htons(static_cast<std::uint16_t>(port_));
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        std::string got;
        const char req[] = "GET /__nginx_fixture HTTP/1.0\r\n\r\n";
        bool sent = false;
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(500);
        if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 || errno == EINPROGRESS) {
            for (;;) {
                const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                    deadline - std::chrono::steady_clock::now());
                pollfd p{fd, static_cast<short>(sent ? POLLIN : POLLOUT), 0};
                if (left.count() <= 0 || ::poll(&p, 1, static_cast<int>(left.count())) <= 0) break;
                if (!sent) {  // connected (or failed: send says which)
                    if (::send(fd, req, sizeof req - 1, MSG_NOSIGNAL) != sizeof req - 1) break;
                    sent = true;
                    continue;
                }
                char buf[512];
                const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
                if (n <= 0) break;
                got.append(buf, static_cast<std::size_t>(n));
            }
        }
        ::close(fd);
        return got.find(token()) != std::string::npos;
    }

    /// Stops nginx and reaps it; kills what is left of its process group before the reap
    /// (while the zombie master still holds the group id, so no other group can own it).
    void stop_process() {
        if (pid_ <= 0) return;
        ::kill(pid_, SIGTERM);
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
        for (;;) {
            siginfo_t info{};
            if (::waitid(P_PID, static_cast<id_t>(pid_), &info, WEXITED | WNOHANG | WNOWAIT) == 0 &&
                info.si_pid == pid_)
                break;
            if (std::chrono::steady_clock::now() > deadline) {
                ::kill(-pid_, SIGKILL);
                break;
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(2));
        }
        ::kill(-pid_, SIGKILL);  // workers orphaned by a master that died hard; usually ESRCH
        int status = 0;
        while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
        }
        pid_ = 0;
    }

    void stop() {
        stop_process();
        std::error_code ec;
        if (!dir_.empty()) std::filesystem::remove_all(dir_, ec);
    }

    nginx_options options_;
    std::filesystem::path dir_;
    pid_t pid_ = 0;
    int port_ = 0;
};

}  // namespace nginx_fixture
