/*
 * /metrics in the Prometheus text format: connections, frames, messages in
 * and out, commit batch sizes, send-to-ack and request latency histograms,
 * queue depths. Counters are plain loop-thread integers; rendering reads
 * them on the loop thread, so no locks are needed.
 */
#include "gateway/gateway_internal.h"

#include <stdatomic.h>

static void counter(nt_buf *out, const char *name, const char *type, const char *help,
                    uint64_t value)
{
    nt_buf_appendf(out, "# HELP %s %s\n# TYPE %s %s\n%s %llu\n", name, help, name, type, name,
                   (unsigned long long)value);
}

void nt_gateway_metrics_connections(nt_gateway *gw, nt_buf *out)
{
    const nt_server_stats *s = nt_server_get_stats(gw->server);
    counter(out, "natter_connections_open", "gauge", "Open TCP connections.", s->connections_open);
    counter(out, "natter_websockets_open", "gauge", "Open WebSocket connections.",
            s->websockets_open);
    counter(out, "natter_connections_total", "counter", "Accepted TCP connections.",
            s->connections_total);
}

void gw_metrics_render(nt_gateway *gw, nt_buf *out)
{
    const nt_server_stats *s = nt_server_get_stats(gw->server);
    const gw_metrics *m = &gw->metrics;
    nt_gateway_metrics_connections(gw, out);
    counter(out, "natter_http_requests_total", "counter", "HTTP requests parsed.",
            s->http_requests);
    counter(out, "natter_frames_in_total", "counter", "WebSocket frames received.", s->frames_in);
    counter(out, "natter_frames_out_total", "counter", "WebSocket frames queued for sending.",
            s->frames_out);
    counter(out, "natter_bytes_in_total", "counter", "Bytes read from sockets.", s->bytes_in);
    counter(out, "natter_bytes_out_total", "counter", "Bytes written to sockets.", s->bytes_out);
    counter(out, "natter_writev_total", "counter", "writev system calls for output.",
            s->writev_calls);
    counter(out, "natter_slow_consumers_total", "counter", "Connections cut off for unread output.",
            s->slow_consumers);
    counter(out, "natter_ws_protocol_errors_total", "counter",
            "WebSockets closed for a protocol error.", s->protocol_errors);
    counter(out, "natter_messages_in_total", "counter", "Messages stored from WebSocket sends.",
            m->messages_in);
    counter(out, "natter_messages_out_total", "counter", "Message frames written to connections.",
            m->messages_out);
    counter(out, "natter_deliveries_total", "counter", "Event frames written by fan-out.",
            m->deliveries);
    counter(out, "natter_send_errors_total", "counter", "WebSocket sends refused.", m->send_errors);
    counter(out, "natter_sends_in_flight", "gauge", "Sends waiting for their commit.",
            gw->sends_in_flight);
    counter(out, "natter_jobs_in_flight", "gauge", "Worker jobs queued or running.",
            gw->jobs_in_flight);

    nt_store_stats_t st;
    nt_store_stats(gw->ctx->store, &st);
    counter(out, "natter_store_commits_total", "counter", "Group commits.", st.batches);
    counter(out, "natter_store_writes_total", "counter", "Writes committed.", st.ops);
    counter(out, "natter_store_queue_depth", "gauge", "Writes waiting for the writer thread.",
            st.queued);
    nt_buf_appendf(out, "# HELP natter_store_batch_size Writes per group commit.\n"
                        "# TYPE natter_store_batch_size histogram\n");
    static const char *les[] = {"1", "4", "16", "64", "256", "+Inf"};
    uint64_t cumulative = 0;
    for (int i = 0; i < 6; i++) {
        cumulative += st.hist[i];
        nt_buf_appendf(out, "natter_store_batch_size_bucket{le=\"%s\"} %llu\n", les[i],
                       (unsigned long long)cumulative);
    }
    nt_buf_appendf(out, "natter_store_batch_size_sum %llu\nnatter_store_batch_size_count %llu\n",
                   (unsigned long long)st.ops, (unsigned long long)st.batches);

    nt_histogram_render(out, "natter_store_commit_seconds",
                        "Time from a group commit's first statement to its durable commit.",
                        &st.commit);
    nt_histogram_render(out, "natter_store_write_seconds",
                        "Time from a write's arrival in the store's queue to its durable commit.",
                        &st.write);
    nt_histogram_render(out, "natter_send_to_ack_seconds",
                        "From a WebSocket send frame to its ack, after the commit.",
                        &m->send_to_ack);
    nt_histogram_render(out, "natter_http_request_seconds", "REST request latency.",
                        &m->request_ms);
}
