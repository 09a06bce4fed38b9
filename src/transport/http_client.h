/*
 * http_client.h - the HTTP(S) branch transport: libcurl's multi interface
 * driven by the libuv loop (curl_multi_socket_action + uv_poll + one uv_timer),
 * with keep-alive connection reuse and a pool of easy handles.
 */
#ifndef DTX_HTTP_CLIENT_H
#define DTX_HTTP_CLIENT_H

#include <uv.h>

#include "transport/transport.h"

struct http_client_config {
    long max_connections;      /* connection cache size; 0 = default (1024) */
    long max_host_connections; /* per host; 0 = unlimited */
};

/*
 * Create the transport on loop. Its scheme is "http"; register it for "https"
 * as well. Calls POST req->url with req->body and the headers of DESIGN §2:
 * Content-Type: application/json, Dtx-Gid, Dtx-Branch, Dtx-Op, Dtx-Type,
 * Idempotency-Key: gid/branch/op, traceparent (when given). Redirects are not
 * followed; the whole call is bounded by req->timeout_ms. Status mapping:
 * 2xx SUCCESS, 409 FAILURE, 425 ONGOING, anything else / connect error /
 * timeout TRANSIENT. The error text names the cause: "HTTP 500: <first bytes
 * of the answer>", "timeout after 3000 ms", or curl's message; status is 0
 * when no HTTP answer arrived.
 *
 * call() returns DTX_EINVAL for a request it cannot send (a missing field, a
 * zero timeout, CR or LF in a header value) and DTX_ECLOSED after free.
 * free() may be called from inside a completion callback. Idle keep-alive
 * connections do not keep the loop alive.
 * Returns NULL on failure to initialise curl.
 */
struct transport *http_client_new(uv_loop_t *loop, const struct http_client_config *cfg);

#endif
