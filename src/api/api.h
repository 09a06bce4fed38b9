/*
 * api.h - the native JSON API (docs/API.md): routes requests from the HTTP
 * server to the engine and renders transactions and errors as JSON.
 */
#ifndef DTX_API_H
#define DTX_API_H

#include "api/http_server.h"
#include "api/request.h"
#include "engine/engine.h"

struct api;

struct api_config {
    struct req_limits limits;
};

struct api *api_new(struct engine *e, const struct api_config *cfg);
/* The http_handler_fn to give the server, with the api as its argument. */
void api_handle(void *arg, struct http_req *req);
/* From now on answer 503 shutting_down to everything but reads. */
void api_stop(struct api *a);
void api_free(struct api *a);

#endif
