/*
 * Copyright (C) ngx_llm developers
 *
 * A throwaway redis-server on a free loopback port for the tests that
 * need a real one.  Header-only; include it after defining _GNU_SOURCE.
 */

#ifndef LLM_TEST_REDIS_H
#define LLM_TEST_REDIS_H

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include <hiredis/hiredis.h>


static int    port;
static pid_t  redis_pid;


static void __attribute__((unused))
redis_sleep_ms(int ms)
{
    struct timespec  ts = { ms / 1000, (long) (ms % 1000) * 1000000 };

    nanosleep(&ts, NULL);
}


static int
free_port(void)
{
    int                 fd, p;
    socklen_t           len;
    struct sockaddr_in  sa;

    fd = socket(AF_INET, SOCK_STREAM, 0);
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bind(fd, (struct sockaddr *) &sa, sizeof(sa));
    len = sizeof(sa);
    getsockname(fd, (struct sockaddr *) &sa, &len);
    p = ntohs(sa.sin_port);
    close(fd);
    return p;
}


static int
redis_start(void)
{
    char           ps[16];
    redisContext  *c;

    snprintf(ps, sizeof(ps), "%d", port);
    redis_pid = fork();
    if (redis_pid == 0) {
        if (freopen("/dev/null", "w", stdout) == NULL) {
            _exit(127);
        }
        execlp("redis-server", "redis-server", "--port", ps, "--bind",
               "127.0.0.1", "--save", "", "--appendonly", "no",
               (char *) NULL);
        _exit(127);
    }

    for (int i = 0; i < 200; i++) {
        c = redisConnect("127.0.0.1", port);
        if (c != NULL && !c->err) {
            redisFree(c);
            return 0;
        }
        if (c != NULL) {
            redisFree(c);
        }
        redis_sleep_ms(25);
    }
    return -1;
}


static void
redis_stop(void)
{
    kill(redis_pid, SIGKILL);
    waitpid(redis_pid, NULL, 0);
}



#endif /* LLM_TEST_REDIS_H */
