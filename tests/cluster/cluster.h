/*
 * A Natter cluster on this machine for the fault tests (tests/cluster/ct_*.c):
 * a private redis-server and PostgreSQL on free loopback ports in a temp
 * folder, several natterd gateway nodes (--roles gateway, --bus redis://,
 * --store postgres://, one shared signing key) started with the
 * integration harness, and nginx in front with the configuration generated
 * from deploy/nginx/natter.conf. Every process is started and stopped by
 * pid; an exit hook stops whatever a failing test left running, and the
 * reaper (unit/reaper.h) redis, PostgreSQL and nginx if the test dies
 * without running it (abort, a sanitizer report, alarm, SIGKILL).
 *
 *     nct_cluster c;
 *     int rc = nct_start(&c, 3);
 *     if (rc == NCT_SKIP) return 77;   // redis-server, PostgreSQL or nginx missing
 *     nth_connect(nct_front(&c), &user) ...
 *     nct_stop(&c);
 */
#ifndef NT_TEST_CLUSTER_H
#define NT_TEST_CLUSTER_H

#include <stdbool.h>

#include "integration/harness.h"

#define NCT_MAX_GATEWAYS 4
#define NCT_SKIP 77

typedef struct nct_cluster {
    char dir[512];
    char key_file[600];
    int redis_port;
    char redis_conf[600];
    char redis_pidfile[600];
    char pg_url[256];
    int nginx_port;
    char nginx_dir[600];
    nt_server *gateways[NCT_MAX_GATEWAYS];
    int ngateways;
    nt_server front; /* nginx: host and port only (pid 0) */
} nct_cluster;

/* Starts redis, PostgreSQL, `ngateways` gateway nodes and nginx. 0,
 * NCT_SKIP if a program is missing (printed), or -1 (printed). */
int nct_start(nct_cluster *c, int ngateways);
/* Stops everything that nct_start started, by pid, and removes the temp
 * folder if remove_dir. */
void nct_stop(nct_cluster *c, bool remove_dir);

/* nginx, as a server the harness helpers accept (nth_api, nth_connect). */
nt_server *nct_front(nct_cluster *c);

/* Stops redis-server (by pid, waiting until it is gone) / starts it again
 * on the same port, empty (no persistence). 0 or -1. */
int nct_redis_stop(nct_cluster *c);
int nct_redis_start(nct_cluster *c);

/* GET /readyz on one node: the HTTP status, or a negative errno. */
int nct_readyz(const nt_server *node);

/* Reads one integer metric (e.g. "natter_websockets_open") from a node's
 * /metrics; -1 if absent. */
long long nct_metric(const nt_server *node, const char *name);

#endif
