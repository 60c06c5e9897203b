/* Floor (a), blocking prefork: PROCESSES workers block in accept() on one shared listener (the
 * kernel wakes one per connection) and serve each connection to its end with blocking reads and
 * one write per answer, as forkd's prefork workers do.
 * Usage: floor-prefork PORT PROCESSES FILE */
#include "floor.h"

static void work(int lfd) {
    for (;;) {
        struct conn c = {.fd = accept_conn(lfd, 0)};
        if (c.fd < 0) continue; /* EINTR, ECONNABORTED, EMFILE: try the next one */
        step(&c);
        close(c.fd);
    }
}

int main(int argc, char **argv) {
    int port, procs;
    setup(argc, argv, &port, &procs);
    run_workers(procs, work, listen_on(port, 0));
}
