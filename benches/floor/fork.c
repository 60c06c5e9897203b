/* Floor (b), fork per connection: the parent accepts, forks a child that serves the connection
 * to its end (keep-alive, blocking), and closes its own copy; a SIGCHLD handler reaps with
 * waitpid(WNOHANG) so no zombie stays. Children are not counted nor capped: PROCESSES is
 * accepted for the same command line as the other floors and ignored.
 * Usage: floor-fork PORT PROCESSES FILE */
#include "floor.h"

static void reap(int sig) {
    int saved = errno;
    (void)sig;
    while (waitpid(-1, NULL, WNOHANG) > 0) {}
    errno = saved;
}

int main(int argc, char **argv) {
    int port, procs;
    setup(argc, argv, &port, &procs);
    int lfd = listen_on(port, 0);
    /* SA_RESTART: a reaped child must not fail the parent's accept(). */
    struct sigaction sa = {.sa_handler = reap, .sa_flags = SA_RESTART | SA_NOCLDSTOP};
    sigaction(SIGCHLD, &sa, NULL);
    for (;;) {
        struct conn c = {.fd = accept_conn(lfd, 0)};
        if (c.fd < 0) continue;
        pid_t pid = fork();
        if (pid == 0) {
            close(lfd);
            step(&c);
            _exit(0);
        }
        if (pid < 0) perror("fork");
        close(c.fd);
    }
}
