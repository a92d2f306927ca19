/*
 * Integration test: natterd's admin /metrics (--admin-listen) reports the
 * gateway's connection gauges as the public port's /metrics does. A real
 * natterd runs with both listeners and one authenticated WebSocket; both
 * ports are scraped and every connection gauge of the public port must be
 * on the admin port too, with the same WebSocket count.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <netinet/in.h>

#include "integration/harness.h"

#define MAX_NAMES 16

/* GET /metrics on host:port into body (NUL-terminated); the HTTP status. */
static int scrape(const char *host, int port, nt_buf *body)
{
    int status = 0;
    nt_buf_reset(body);
    if (ntc_http(host, port, "GET", "/metrics", NULL, NULL, &status, body) != 0) return -1;
    return status;
}

/* The names of the gauges ("# TYPE NAME gauge") about connections in a
 * Prometheus text body: their names say connections or websockets. */
static int connection_gauges(const char *text, char names[][64], int cap)
{
    int n = 0;
    for (const char *p = text; p && *p;) {
        const char *eol = strchr(p, '\n');
        size_t len = eol ? (size_t)(eol - p) : strlen(p);
        char line[256], name[64], type[32];
        if (len < sizeof line) {
            memcpy(line, p, len);
            line[len] = '\0';
            if (sscanf(line, "# TYPE %63s %31s", name, type) == 2 && strcmp(type, "gauge") == 0 &&
                (strstr(name, "connections") || strstr(name, "websockets")) && n < cap)
                snprintf(names[n++], 64, "%s", name);
        }
        p = eol ? eol + 1 : NULL;
    }
    return n;
}

/* The value of the sample line "NAME VALUE", or -1. */
static long long sample(const char *text, const char *name)
{
    size_t len = strlen(name);
    for (const char *p = text; p && *p;) {
        if (strncmp(p, name, len) == 0 && p[len] == ' ') return strtoll(p + len + 1, NULL, 10);
        p = strchr(p, '\n');
        if (p) p++;
    }
    return -1;
}

static void case_admin_has_connection_gauges(const nt_server *srv, int admin_port)
{
    nth_user u;
    REQUIRE(nth_register(srv, "adm", &u) == 0);
    ntc_conn *ws = nth_connect(srv, &u);
    REQUIRE(ws != NULL);

    nt_buf pub = NT_BUF_INIT, adm = NT_BUF_INIT;
    CHECK_EQ_INT(scrape(srv->host, srv->port, &pub), 200);
    CHECK_EQ_INT(scrape(srv->host, admin_port, &adm), 200);
    const char *pub_text = pub.data ? pub.data : "";
    const char *adm_text = adm.data ? adm.data : "";

    char pub_names[MAX_NAMES][64], adm_names[MAX_NAMES][64];
    int npub = connection_gauges(pub_text, pub_names, MAX_NAMES);
    int nadm = connection_gauges(adm_text, adm_names, MAX_NAMES);
    /* natter_connections_open and natter_websockets_open at least. */
    CHECK(npub >= 2);
    CHECK_EQ_INT(nadm, npub);
    for (int i = 0; i < npub; i++) {
        bool found = false;
        for (int j = 0; j < nadm && !found; j++)
            found = strcmp(pub_names[i], adm_names[j]) == 0;
        if (!found) fprintf(stderr, "admin /metrics lacks %s\n", pub_names[i]);
        CHECK(found);
    }
    /* The gateway's numbers, not the admin listener's own. */
    CHECK_EQ_INT(sample(pub_text, "natter_websockets_open"), 1);
    CHECK_EQ_INT(sample(adm_text, "natter_websockets_open"), 1);
    CHECK(sample(adm_text, "natter_connections_open") >= 1);
    CHECK(sample(adm_text, "natter_connections_total") >= 1);
    /* What the admin port had before stays. */
    CHECK(strstr(adm_text, "natter_role{role=\"gateway\"} 1") != NULL);
    CHECK(strstr(adm_text, "natter_store_up 1") != NULL);

    nt_buf_free(&pub);
    nt_buf_free(&adm);
    ntc_conn_free(ws);
}

int main(void)
{
    int admin_port = nth_free_port();
    if (admin_port <= 0) return 1;
    char args[64];
    snprintf(args, sizeof args, "--admin-listen 127.0.0.1:%d", admin_port);
    nt_server *srv = nth_start(args);
    if (!srv) return 1;
    nth_case_begin("admin /metrics has the gateway's connection gauges");
    case_admin_has_connection_gauges(srv, admin_port);
    nth_case_end();
    CHECK_EQ_INT(nth_stop(srv), 0);
    if (check_failures) nth_dump_log(srv, 4000);
    nth_free(srv, check_failures == 0);
    return check_exit();
}
