/* Floor (c), epoll workers: PROCESSES workers, each one level-triggered epoll loop over
 * non-blocking sockets. They share one listener, registered in each worker's epoll with
 * EPOLLEXCLUSIVE (not SO_REUSEPORT): a new connection wakes one waiting worker (or a few) rather
 * than all, and no connection is hashed to a busy worker while another idles. A wake-up accepts
 * one connection; level triggering reports the listener again while more are queued.
 * Usage: floor-epoll PORT PROCESSES FILE */
#include "floor.h"
#include <sys/epoll.h>

#define MAX_FD 65536
static struct conn *conns[MAX_FD];

static void work(int lfd) {
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN | EPOLLEXCLUSIVE, .data.fd = lfd}, evs[256];
    if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev) < 0) die("epoll");
    for (;;) {
        int n = epoll_wait(ep, evs, 256, -1);
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            if (fd == lfd) {
                int cfd = accept_conn(lfd, SOCK_NONBLOCK);
                struct conn *c = cfd >= 0 && cfd < MAX_FD ? calloc(1, sizeof *c) : NULL;
                ev = (struct epoll_event){.events = EPOLLIN, .data.fd = cfd};
                if (!c || epoll_ctl(ep, EPOLL_CTL_ADD, cfd, &ev) < 0) {
                    if (cfd >= 0) close(cfd);
                    free(c);
                    continue;
                }
                c->fd = cfd;
                c->events = EPOLLIN;
                conns[cfd] = c;
                continue;
            }
            struct conn *c = conns[fd];
            if (!c) continue;
            int r = step(c);
            if (r == DONE) {
                close(fd); /* also leaves the epoll set: the fd is never duplicated */
                free(c);
                conns[fd] = NULL;
                continue;
            }
            unsigned want = r == WANT_READ ? EPOLLIN : EPOLLOUT;
            if (want != c->events) {
                ev = (struct epoll_event){.events = want, .data.fd = fd};
                epoll_ctl(ep, EPOLL_CTL_MOD, fd, &ev);
                c->events = want;
            }
        }
    }
}

int main(int argc, char **argv) {
    int port, procs;
    setup(argc, argv, &port, &procs);
    run_workers(procs, work, listen_on(port, SOCK_NONBLOCK));
}
