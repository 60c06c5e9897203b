/* What the three floor servers share. A floor answers every request, whatever its path, with
 * one fixed response built at start-up from a file, so that it costs as little as its process
 * model allows: benches/compare.sh divides forkd's figures by a floor's from the same run to
 * see how far forkd is from the model's limit rather than from another server's features.
 *
 * Parsing is only what framing needs: a request ends at its first "\r\n\r\n" (no bodies; GET
 * only), pipelined requests are answered in order, "Connection: close" and HTTP/1.0 close the
 * connection after the answer, which then says "Connection: close". */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* Whole responses, head and body in one buffer each, so that an answer is one write. */
static char *resp_keep, *resp_close;
static size_t resp_keep_len, resp_close_len;

static void die(const char *what) {
    perror(what);
    exit(1);
}

static char *build(const char *body, size_t len, const char *conn, size_t *out_len) {
    char head[256];
    int n = snprintf(head, sizeof head,
                     "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: %zu\r\n%s\r\n",
                     len, conn);
    char *r = malloc((size_t)n + len);
    if (!r) die("malloc");
    memcpy(r, head, (size_t)n);
    memcpy(r + n, body, len);
    *out_len = (size_t)n + len;
    return r;
}

/* Parses PORT PROCESSES FILE, reads FILE and builds both responses. */
static void setup(int argc, char **argv, int *port, int *procs) {
    if (argc != 4 || (*port = atoi(argv[1])) <= 0 || (*procs = atoi(argv[2])) <= 0) {
        fprintf(stderr, "usage: %s PORT PROCESSES FILE\n", argv[0]);
        exit(2);
    }
    int fd = open(argv[3], O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0) die(argv[3]);
    char *body = malloc((size_t)st.st_size + 1);
    if (!body) die("malloc");
    size_t got = 0;
    while (got < (size_t)st.st_size) {
        ssize_t n = read(fd, body + got, (size_t)st.st_size - got);
        if (n <= 0) die("read");
        got += (size_t)n;
    }
    close(fd);
    resp_keep = build(body, got, "", &resp_keep_len);
    resp_close = build(body, got, "Connection: close\r\n", &resp_close_len);
    free(body);
    /* A client gone mid-write is an EPIPE to handle, not a reason to die. */
    signal(SIGPIPE, SIG_IGN);
}

/* The listener on 127.0.0.1:PORT, made before any fork so that every process shares it. */
static int listen_on(int port, int flags) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | flags, 0), one = 1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0) die("socket");
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0) die("bind");
    if (listen(fd, 4096) < 0) die("listen");
    return fd;
}

/* Accepts one connection (CLOEXEC, plus FLAGS), with Nagle off: a small answer must not wait. */
static int accept_conn(int lfd, int flags) {
    int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC | flags), one = 1;
    if (fd >= 0) setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

struct conn {
    int fd;
    unsigned events;     /* what epoll waits for on it (epoll floor only) */
    int close_after;     /* the answer being written is the last one */
    const char *out;     /* the rest of the answer being written */
    size_t out_left;
    size_t in_len;
    char in[8192];       /* requests read and not yet answered; a longer head closes */
};

static int wants_close(const char *h, size_t n) {
    static const char key[] = "\r\nconnection: close";
    const char *eol = memchr(h, '\r', n);
    if (eol && eol - h >= 8 && memcmp(eol - 8, "HTTP/1.0", 8) == 0) return 1;
    for (size_t i = 0; i + sizeof key - 1 <= n; i++)
        if (strncasecmp(h + i, key, sizeof key - 1) == 0) return 1;
    return 0;
}

enum { DONE, WANT_READ, WANT_WRITE };

/* Runs a connection as far as it goes without blocking: finish the answer being written,
 * answer the next buffered request, else read. Returns DONE when the connection is to be
 * closed, WANT_READ/WANT_WRITE when a non-blocking socket would block. On a blocking socket
 * it returns only when the connection is over. */
static int step(struct conn *c) {
    for (;;) {
        while (c->out_left) {
            ssize_t n = write(c->fd, c->out, c->out_left);
            if (n < 0 && errno == EINTR) continue;
            if (n < 0) return errno == EAGAIN ? WANT_WRITE : DONE;
            c->out += n;
            c->out_left -= (size_t)n;
        }
        if (c->close_after) return DONE;
        char *end = memmem(c->in, c->in_len, "\r\n\r\n", 4);
        if (end) {
            size_t head = (size_t)(end + 4 - c->in);
            c->close_after = wants_close(c->in, head);
            c->out = c->close_after ? resp_close : resp_keep;
            c->out_left = c->close_after ? resp_close_len : resp_keep_len;
            memmove(c->in, c->in + head, c->in_len - head);
            c->in_len -= head;
            continue;
        }
        if (c->in_len == sizeof c->in) return DONE;
        ssize_t n = read(c->fd, c->in + c->in_len, sizeof c->in - c->in_len);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && errno == EAGAIN) return WANT_READ;
        if (n <= 0) return DONE;
        c->in_len += (size_t)n;
    }
}

static volatile sig_atomic_t stopping;
static inline void on_stop(int sig) {
    (void)sig;
    stopping = 1;
}

/* Forks PROCS workers running WORK(lfd) and waits; on TERM or INT stops them and exits. A
 * worker whose parent dies gets SIGKILL, so none outlives a killed master. */
static inline void run_workers(int procs, void (*work)(int), int lfd) {
    pid_t parent = getpid(), *kids = calloc((size_t)procs, sizeof *kids);
    if (!kids) die("calloc");
    for (int i = 0; i < procs; i++) {
        kids[i] = fork();
        if (kids[i] < 0) die("fork");
        if (kids[i] == 0) {
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            if (getppid() != parent) _exit(0);
            work(lfd);
            _exit(0);
        }
    }
    /* No SA_RESTART: the signal must end wait() so that the loop sees `stopping`. */
    struct sigaction sa = {.sa_handler = on_stop};
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    while (!stopping)
        if (wait(NULL) < 0 && errno == ECHILD) break;
    for (int i = 0; i < procs; i++) kill(kids[i], SIGTERM);
    while (wait(NULL) > 0 || errno == EINTR) {}
    exit(0);
}
