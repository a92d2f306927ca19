/*
 * The gateway: gives HTTP requests and WebSocket messages their meaning.
 * It routes REST calls and WebSocket frames to the service handlers (run on
 * worker threads), keeps the registry of which local connections belong to
 * which user, writes deliveries from the bus to those connections, and
 * serves /healthz, /readyz, /metrics, the OpenAPI document and the web
 * client. Everything here runs on the loop thread except the handlers.
 */
#ifndef NT_GATEWAY_H
#define NT_GATEWAY_H

#include <uv.h>

#include "common/buf.h"
#include "common/config.h"
#include "services/api.h"

typedef struct nt_gateway nt_gateway;

/* Creates the gateway and its server on `loop`; ctx must outlive it. */
nt_gateway *nt_gateway_new(uv_loop_t *loop, nt_ctx *ctx, const nt_config *cfg, char *err,
                           size_t err_len);
/* Starts listening. 0 or a negative libuv code. */
int nt_gateway_start(nt_gateway *gw);
/* Begins the SIGTERM drain; `done` runs on the loop once every connection,
 * job and pending send is finished or the drain timeout passed. */
void nt_gateway_drain(nt_gateway *gw, void (*done)(void *arg), void *arg);
void nt_gateway_free(nt_gateway *gw);

/* Loop thread: appends to `out` the connection counts of the gateway's
 * public listener in the Prometheus text format (natter_connections_open,
 * natter_websockets_open, natter_connections_total), the same lines its
 * own /metrics starts with; natterd's admin /metrics shows them too. */
void nt_gateway_metrics_connections(nt_gateway *gw, nt_buf *out);

#endif
