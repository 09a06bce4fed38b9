/*
 * spec.c - the lifetime of a struct txn_spec, the validated form of a
 * create request (see txn.h and api/request.h). A spec owns every string in
 * it; a partly filled one (steps zeroed past the last filled) frees cleanly.
 */
#include "engine/txn.h"

#include <stdlib.h>

void txn_spec_free(struct txn_spec *spec)
{
    if (spec == NULL)
        return;
    if (spec->steps != NULL) {
        for (uint32_t i = 0; i < spec->nsteps; i++) {
            free(spec->steps[i].action);
            free(spec->steps[i].compensate);
            free(spec->steps[i].payload);
            free(spec->steps[i].after);
        }
        free(spec->steps);
    }
    free(spec->gid);
    free(spec);
}
