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
        for (uint32_t i = 0; i < spec->nsteps; i++)
            step_spec_clear(&spec->steps[i]);
        free(spec->steps);
    }
    free(spec->check);
    free(spec->gid);
    free(spec);
}

void step_spec_clear(struct step_spec *s)
{
    free(s->id);
    free(s->prepare);
    free(s->action);
    free(s->compensate);
    free(s->payload);
    free(s->after);
    s->id = s->prepare = s->action = s->compensate = s->payload = NULL;
    s->after = NULL;
}
