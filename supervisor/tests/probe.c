/* What a program sees of the CPU: one line per leaf asked for on the command line
 * ("LEAF" or "LEAF.SUBLEAF", in hex), each "leaf.subleaf eax ebx ecx edx"; with
 * "--then PROGRAM ARGS..." it then runs PROGRAM as a child and exits with its status.
 * "--loop N" instead times N CPUIDs of leaf 0 and prints the nanoseconds each took. */
#include <cpuid.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int loop(long n) {
    struct timespec t0, t1;
    unsigned a, b, c, d;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (long k = 0; k < n; k++)
        __cpuid_count(0, 0, a, b, c, d);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    printf("%.1f\n", ((t1.tv_sec - t0.tv_sec) * 1e9 + (t1.tv_nsec - t0.tv_nsec)) / n);
    return 0;
}

int main(int argc, char **argv) {
    int i;
    if (argc == 3 && strcmp(argv[1], "--loop") == 0)
        return loop(atol(argv[2]));
    for (i = 1; i < argc && strcmp(argv[i], "--then") != 0; i++) {
        unsigned leaf = 0, sub = 0, a, b, c, d;
        char *dot;
        leaf = (unsigned)strtoul(argv[i], &dot, 16);
        if (*dot == '.')
            sub = (unsigned)strtoul(dot + 1, NULL, 16);
        __cpuid_count(leaf, sub, a, b, c, d);
        printf("%x.%x %08x %08x %08x %08x\n", leaf, sub, a, b, c, d);
    }
    fflush(stdout);
    if (i + 1 < argc) {
        pid_t pid = fork();
        int status;
        if (pid == 0) {
            execvp(argv[i + 1], argv + i + 1);
            _exit(127);
        }
        waitpid(pid, &status, 0);
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    }
    return 0;
}
