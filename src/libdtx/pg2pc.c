/*
 * pg2pc.c - the participant's half of a 2pc branch on a PostgreSQL resource
 * (include/dtx.h, "2pc on PostgreSQL resources"): PREPARE TRANSACTION on the
 * caller's open transaction, under the name dtxd looks for.
 *
 * The name is "dtx:<gid>:<branch>". gid (1-128) and branch (1-64) are
 * checked against the API's alphabet before anything is sent, so the name
 * is at most 4 + 128 + 1 + 64 = 197 bytes, under PostgreSQL's limit of 199
 * for a transaction identifier. PREPARE TRANSACTION takes no parameters, so
 * the name is spliced into the statement: as a literal quoted by
 * PQescapeLiteral, never by hand, even though the alphabet has no quote.
 *
 * Two behaviours of PostgreSQL shape the checks:
 * - PREPARE TRANSACTION in a transaction that has already failed is not an
 *   error: it rolls back and answers the command tag "ROLLBACK". A caller
 *   would take that for a yes vote, so a failed transaction is refused
 *   before sending, and the command tag is checked after.
 * - A PREPARE TRANSACTION that fails (name in use, prepared transactions
 *   disabled, temporary tables ...) ends the transaction as a ROLLBACK.
 *   Either way, after this call the caller's transaction is over.
 */
#include <stdio.h>
#include <string.h>

#include <libpq-fe.h>

#include "client_int.h"

/* The longest name: "dtx:" gid ":" branch. */
#define NAME_MAX_LEN (sizeof DTX_PG_XACT_PREFIX - 1 + DTX_GID_MAX + 1 + DTX_BRANCH_MAX)

int dtx_pg_prepare(PGconn *conn, const char *gid, const char *branch)
{
    char name[NAME_MAX_LEN + 1];
    char sql[NAME_MAX_LEN * 2 + 64];
    PGTransactionStatusType st;
    PGresult *res;
    char *lit;
    int rc;

    if (conn == NULL || !libdtx_valid_id(gid, DTX_GID_MAX) ||
        !libdtx_valid_id(branch, DTX_BRANCH_MAX) || strchr(branch, ':') != NULL)
        return DTX_EINVAL;
    if (PQstatus(conn) != CONNECTION_OK)
        return DTX_EDB;
    st = PQtransactionStatus(conn);
    if (st == PQTRANS_INERROR)
        return DTX_EDB; /* the work failed: see PQerrorMessage */
    if (st != PQTRANS_INTRANS)
        return DTX_EINVAL; /* no transaction open (or a command still running) */

    snprintf(name, sizeof name, "%s%s:%s", DTX_PG_XACT_PREFIX, gid, branch);
    lit = PQescapeLiteral(conn, name, strlen(name));
    if (lit == NULL)
        return DTX_ENOMEM; /* the only failure left for this alphabet */
    snprintf(sql, sizeof sql, "PREPARE TRANSACTION %s", lit);
    PQfreemem(lit);

    res = PQexec(conn, sql);
    if (PQresultStatus(res) == PGRES_COMMAND_OK &&
        strcmp(PQcmdStatus(res), "PREPARE TRANSACTION") == 0)
        rc = DTX_OK;
    else
        rc = DTX_EDB;
    PQclear(res);
    return rc;
}

int dtx_pg_prepare_register(struct dtx_client *c, PGconn *conn, const char *gid, const char *branch,
                            const char *resource, const char *payload_json, int *prepared)
{
    if (prepared != NULL)
        *prepared = 0;
    if (c == NULL)
        return DTX_EINVAL;
    int rc = dtx_pg_prepare(conn, gid, branch);
    if (rc != 0)
        return rc;
    if (prepared != NULL)
        *prepared = 1;
    return dtx_register_2pc_resource(c, gid, branch, resource, payload_json);
}
