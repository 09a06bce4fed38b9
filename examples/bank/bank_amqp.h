/*
 * bank_amqp.h - the bank's branch operations over RabbitMQ: libdtx's AMQP
 * participant loop on a thread and a database connection of its own,
 * consuming one queue bound to the topic exchange "dtx.bank" (see
 * bank_amqp.c).
 */
#ifndef BANK_AMQP_H
#define BANK_AMQP_H

#include <stdbool.h>
#include <stddef.h>

struct bank_amqp_config {
    const char *broker_url; /* amqp://user:pass@host:port/vhost or amqps://... */
    const char *queue;      /* the queue to consume; routing keys "<queue>.<op>" */
    const char *exchange;   /* the topic exchange bound to it, e.g. "dtx.bank" */
    const char *cacert;     /* amqps: CA file, or NULL for the system's */
    const char *db;         /* the bank's --db: conninfo or SQLite path */
    int max_attempts;       /* a delivery's handler runs before dead-lettering */
    /* TEST AID, may be NULL: take a fault of an HTTP path ("/saga/debit") */
    bool (*fault)(const char *path, int *status, int *delay_ms);
    void (*log)(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
};

struct bank_amqp;

/*
 * Check the configuration, open the database connection and make the loop,
 * then start its thread: it declares the exchange, the queue and the
 * binding "<queue>.#" (retrying with backoff while the broker is away) and
 * runs the loop. The strings are borrowed: they must outlive the service.
 * OUT: *out. Returns 0, or -1 with the reason in err (a bad URL or queue
 * name, the database cannot be opened, no thread).
 */
int bank_amqp_start(const struct bank_amqp_config *cfg, struct bank_amqp **out, char *err,
                    size_t errlen);

/* Stop the loop (the message in hand is finished), join its thread, free
 * everything. NULL is allowed. */
void bank_amqp_stop(struct bank_amqp *a);

#endif
