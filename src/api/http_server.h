/*
 * http_server.h - the API's HTTP transport: libmicrohttpd with no thread of
 * its own, driven from the libuv loop (its epoll fd under a uv_poll, its
 * timeout under a uv_timer). A handler may answer at once or later: a request
 * left unanswered is suspended and resumed when http_req_respond() is called,
 * which is how replies wait for the log's fsync and for `wait`.
 *
 * This layer knows nothing of transactions: it hands complete requests (body
 * capped; 413 answered here) to one handler. A body announced (Content-Length)
 * over the cap is refused before it is read, and that connection is closed
 * after the answer; a chunked body over the cap is drained, then refused.
 */
#ifndef DTX_HTTP_SERVER_H
#define DTX_HTTP_SERVER_H

#include <stddef.h>
#include <uv.h>

struct http_server;
struct http_req;

/* Called on the loop thread with a complete request. The handler must
 * eventually call http_req_respond() exactly once (now or later). It must not
 * free the server. */
typedef void (*http_handler_fn)(void *arg, struct http_req *req);

struct http_server_config {
    const char *host;         /* listen address, e.g. "127.0.0.1" or "0.0.0.0" */
    unsigned short port;      /* 0 = pick a free port (see http_server_port) */
    size_t max_body;          /* larger bodies answered 413 with a JSON error */
    unsigned max_connections; /* 0 = default */
    http_handler_fn handler;
    void *handler_arg;
};

/* Start listening. Returns NULL with *errmsg set (static text) on failure. */
struct http_server *http_server_new(uv_loop_t *loop, const struct http_server_config *cfg,
                                    const char **errmsg /* OUT */);
unsigned short http_server_port(const struct http_server *s);
/* Stop accepting new connections; requests in flight can still be answered. */
void http_server_quiesce(struct http_server *s);
/* Close everything (unanswered requests are dropped: a later
 * http_req_respond() on one of them only frees it) and free. The uv handles
 * finish closing on the loop's next turn. */
void http_server_free(struct http_server *s);

/* Request accessors: valid until the request is answered. Once the client
 * is gone (server freed) method and path are "" and lookups return NULL. */
const char *http_req_method(const struct http_req *r);
const char *http_req_path(const struct http_req *r); /* URL-decoded, without query string */
/* Query parameter value (URL-decoded) or NULL. */
const char *http_req_query(const struct http_req *r, const char *key);
/* Request header value or NULL (case-insensitive name). */
const char *http_req_header(const struct http_req *r, const char *name);
const char *http_req_body(const struct http_req *r); /* NUL-terminated, "" if none */
size_t http_req_body_len(const struct http_req *r);

/*
 * Answer the request. Takes ownership of body (malloc'ed, may be NULL when
 * len is 0). Safe to call after the client went away: the answer is then
 * dropped and everything freed. After this call r must not be used.
 */
void http_req_respond(struct http_req *r, int status, const char *content_type, char *body,
                      size_t len);
#endif
