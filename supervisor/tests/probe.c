/* What a program sees of the CPU: one line per leaf asked for on the command line
 * ("LEAF" or "LEAF.SUBLEAF", in hex), each "leaf.subleaf eax ebx ecx edx"; with
 * "--then PROGRAM ARGS..." it then runs PROGRAM as a child and exits with its status. */
#include <cpuid.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv) {
    int i;
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
