/* transport.c - the scheme router (see transport.h). */
#include "transport/transport.h"

#include <string.h>

#include "common/err.h"

void transport_router_init(struct transport_router *r)
{
    memset(r, 0, sizeof *r);
}

int transport_router_add(struct transport_router *r, const char *scheme, struct transport *t)
{
    if (r->n >= TRANSPORT_MAX)
        return DTX_ETOOBIG;
    for (int i = 0; i < r->n; i++)
        if (strcmp(r->scheme[i], scheme) == 0)
            return DTX_EEXISTS;
    r->scheme[r->n] = scheme;
    r->by_scheme[r->n++] = t;
    return 0;
}

static struct transport *lookup(const struct transport_router *r, const char *url)
{
    const char *colon = strstr(url, "://");
    if (colon == NULL)
        return NULL;
    size_t n = (size_t)(colon - url);
    for (int i = 0; i < r->n; i++)
        if (strlen(r->scheme[i]) == n && strncmp(r->scheme[i], url, n) == 0)
            return r->by_scheme[i];
    return NULL;
}

int transport_router_knows(const struct transport_router *r, const char *url)
{
    return lookup(r, url) != NULL;
}

int transport_call(struct transport_router *r, const struct call_req *req, call_done_fn cb,
                   void *arg)
{
    struct transport *t = lookup(r, req->url);
    if (t == NULL)
        return DTX_EUNSUPPORTED;
    return t->ops->call(t, req, cb, arg);
}

void transport_router_free(struct transport_router *r)
{
    for (int i = 0; i < r->n; i++) {
        struct transport *t = r->by_scheme[i];
        if (t == NULL)
            continue;
        /* one transport may serve several schemes: free it once */
        for (int j = i + 1; j < r->n; j++)
            if (r->by_scheme[j] == t)
                r->by_scheme[j] = NULL;
        t->ops->free(t);
    }
    transport_router_init(r);
}
