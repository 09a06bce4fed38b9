/*
 * crash.c - crash points (see crash.h).
 *
 * The configuration is read once, by a constructor that runs before main():
 * no thread exists yet, so the chosen point and hit number never change
 * afterwards and need no lock; only the hit counter is shared, an atomic.
 * Checking at start, before the daemon parses its options, also makes a
 * misspelt DTX_CRASH_POINT an error at once instead of a run that never
 * crashes. The table is compiled in every build (it costs a few strings);
 * the constructor and crash_hit() only with -DDTX_CRASH_POINTS.
 */
#include "common/crash.h"

#include <stddef.h>

#define CRASH_NAME(name, doc) name,
#define CRASH_DOC(name, doc)  doc,
const char *const crash_points[] = {DTX_CRASH_POINT_MAP(CRASH_NAME) NULL};
const char *const crash_point_docs[] = {DTX_CRASH_POINT_MAP(CRASH_DOC) NULL};
#undef CRASH_NAME
#undef CRASH_DOC

#ifdef DTX_CRASH_POINTS

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *target;   /* the point to crash at; NULL: none */
static unsigned long at_hit; /* crash at this hit (1 = the first) */
static atomic_ulong hits;    /* hits of target so far */

static void crash_config(void) __attribute__((constructor));

static void crash_config(void)
{
    const char *p = getenv("DTX_CRASH_POINT");
    if (p == NULL || *p == '\0')
        return;
    if (strcmp(p, "list") == 0) {
        for (size_t i = 0; crash_points[i] != NULL; i++)
            printf("%-30s %s\n", crash_points[i], crash_point_docs[i]);
        fflush(stdout);
        _exit(0);
    }
    for (size_t i = 0; crash_points[i] != NULL; i++)
        if (strcmp(p, crash_points[i]) == 0)
            target = crash_points[i];
    if (target == NULL) {
        fprintf(stderr,
                "dtxd: DTX_CRASH_POINT=%s names no crash point (DTX_CRASH_POINT=list lists "
                "them)\n",
                p);
        _exit(2);
    }
    const char *h = getenv("DTX_CRASH_HIT");
    at_hit = 1;
    if (h != NULL && *h != '\0') {
        char *end;
        at_hit = strtoul(h, &end, 10);
        if (*end != '\0' || at_hit == 0 || h[0] == '-') {
            fprintf(stderr, "dtxd: DTX_CRASH_HIT must be a positive integer, got \"%s\"\n", h);
            _exit(2);
        }
    }
    fprintf(stderr, "dtxd: crash build: will crash at hit %lu of crash point %s\n", at_hit, target);
}

void crash_hit(const char *name)
{
    if (target == NULL || strcmp(name, target) != 0)
        return;
    unsigned long n = atomic_fetch_add(&hits, 1) + 1;
    if (n != at_hit)
        return;
    char line[160];
    int len = snprintf(line, sizeof line, "crash point %s hit %lu\n", name, n);
    if (len > 0) {
        size_t n_out = (size_t)len < sizeof line ? (size_t)len : sizeof line - 1;
        ssize_t w = write(STDERR_FILENO, line, n_out);
        (void)w;
    }
    abort();
}

#endif
