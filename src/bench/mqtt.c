/*
 * A minimal MQTT 3.1.1 client for natter-bench's --proto mqtt: just what
 * a QoS 0 chat room needs (CONNECT, SUBSCRIBE, PUBLISH, PINGREQ, and the
 * broker's CONNACK, SUBACK, PUBLISH, PINGRESP), non-blocking and driven by
 * the bench's epoll loop like an ntc_conn. Input may stop anywhere inside a
 * packet: bytes are kept until the packet is whole. Output is one buffer
 * written with one send(2) per flush.
 */
#include "bench/bench.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define MQTT_READ_CHUNK 65536
#define MQTT_MAX_PACKET (1u << 20)

enum {
    MQTT_CONNECT = 1,
    MQTT_CONNACK = 2,
    MQTT_PUBLISH = 3,
    MQTT_SUBSCRIBE = 8,
    MQTT_SUBACK = 9,
    MQTT_PINGREQ = 12,
    MQTT_PINGRESP = 13,
};

struct nb_mqtt {
    int fd;
    bool connecting; /* TCP connect not confirmed yet */
    bool connected;  /* CONNACK 0 received */
    bool dead;
    int subacks;
    uint16_t next_packet_id;
    size_t out_head;
    nt_buf out;
    nt_buf in; /* an unfinished packet between reads */
};

/* Appends the fixed header: type and flags, then the remaining length. */
static int mqtt__header(nt_buf *b, uint8_t first, size_t remaining)
{
    uint8_t hdr[5];
    size_t n = 0;
    hdr[n++] = first;
    do {
        uint8_t digit = remaining % 128;
        remaining /= 128;
        hdr[n++] = digit | (remaining ? 0x80 : 0);
    } while (remaining && n < 5);
    return nt_buf_append(b, hdr, n);
}

static int mqtt__str(nt_buf *b, const char *s, size_t len)
{
    uint8_t l[2] = {(uint8_t)(len >> 8), (uint8_t)len};
    int rc = nt_buf_append(b, l, 2);
    return rc ? rc : nt_buf_append(b, s, len);
}

nb_mqtt *nb_mqtt_new(const char *host, int port, const char *client_id)
{
    nb_mqtt *m = calloc(1, sizeof *m);
    if (!m) {
        errno = ENOMEM;
        return NULL;
    }
    m->next_packet_id = 1;
    size_t id_len = strlen(client_id);
    /* variable header: "MQTT", level 4, flags (clean session), keep-alive */
    static const uint8_t vh[] = {0, 4, 'M', 'Q', 'T', 'T', 4, 0x02, 0, 60};
    int rc = mqtt__header(&m->out, MQTT_CONNECT << 4, sizeof vh + 2 + id_len);
    if (!rc) rc = nt_buf_append(&m->out, vh, sizeof vh);
    if (!rc) rc = mqtt__str(&m->out, client_id, id_len);
    if (rc) goto fail;
    m->fd = ntc_tcp_connect_start(host, port);
    if (m->fd < 0) {
        rc = m->fd;
        goto fail;
    }
    m->connecting = true;
    return m;
fail:
    nt_buf_free(&m->out);
    free(m);
    errno = -rc;
    return NULL;
}

void nb_mqtt_free(nb_mqtt *m)
{
    if (!m) return;
    if (m->fd >= 0) close(m->fd);
    nt_buf_free(&m->out);
    nt_buf_free(&m->in);
    free(m);
}

int nb_mqtt_fd(const nb_mqtt *m)
{
    return m->fd;
}

bool nb_mqtt_wants_write(const nb_mqtt *m)
{
    return !m->dead && (m->connecting || m->out.len > m->out_head);
}

bool nb_mqtt_connected(const nb_mqtt *m)
{
    return m->connected;
}

int nb_mqtt_subacks(const nb_mqtt *m)
{
    return m->subacks;
}

int nb_mqtt_subscribe(nb_mqtt *m, const char *topic)
{
    size_t tlen = strlen(topic);
    uint16_t id = m->next_packet_id++;
    if (!m->next_packet_id) m->next_packet_id = 1;
    uint8_t pid[2] = {(uint8_t)(id >> 8), (uint8_t)id};
    uint8_t qos = 0;
    int rc = mqtt__header(&m->out, (MQTT_SUBSCRIBE << 4) | 0x2, 2 + 2 + tlen + 1);
    if (!rc) rc = nt_buf_append(&m->out, pid, 2);
    if (!rc) rc = mqtt__str(&m->out, topic, tlen);
    if (!rc) rc = nt_buf_append(&m->out, &qos, 1);
    return rc;
}

int nb_mqtt_publish(nb_mqtt *m, const char *topic, const void *payload, size_t len)
{
    size_t tlen = strlen(topic);
    int rc = mqtt__header(&m->out, MQTT_PUBLISH << 4, 2 + tlen + len);
    if (!rc) rc = mqtt__str(&m->out, topic, tlen);
    if (!rc) rc = nt_buf_append(&m->out, payload, len);
    return rc;
}

int nb_mqtt_ping(nb_mqtt *m)
{
    static const uint8_t ping[2] = {MQTT_PINGREQ << 4, 0};
    return nt_buf_append(&m->out, ping, 2);
}

int nb_mqtt_flush(nb_mqtt *m)
{
    if (m->dead) return -EPIPE;
    if (m->connecting) {
        int err = 0;
        socklen_t len = sizeof err;
        if (getsockopt(m->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
        if (err == EINPROGRESS || err == EALREADY) return 0;
        if (err) {
            m->dead = true;
            return -err;
        }
        m->connecting = false;
    }
    while (m->out.len > m->out_head) {
        ssize_t n = send(m->fd, m->out.data + m->out_head, m->out.len - m->out_head, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == ENOTCONN) break;
            m->dead = true;
            return -errno;
        }
        m->out_head += (size_t)n;
        break; /* one send per flush; the rest when the socket is writable */
    }
    if (m->out_head == m->out.len) {
        m->out_head = m->out.len = 0;
        if (m->out.cap > 65536) nt_buf_free(&m->out);
    }
    return 0;
}

/* Handles one whole packet. */
static void mqtt__packet(nb_mqtt *m, const uint8_t *p, size_t hdr_len, size_t rem,
                         nb_mqtt_on_publish cb, void *arg)
{
    uint8_t type = p[0] >> 4;
    const uint8_t *body = p + hdr_len;
    switch (type) {
    case MQTT_CONNACK:
        if (rem >= 2 && body[1] == 0)
            m->connected = true;
        else
            m->dead = true;
        break;
    case MQTT_SUBACK:
        if (rem >= 3 && body[2] != 0x80) m->subacks++;
        break;
    case MQTT_PUBLISH: {
        if (rem < 2) return;
        size_t tlen = ((size_t)body[0] << 8) | body[1];
        size_t off = 2 + tlen;
        if ((p[0] & 0x06) != 0)
            off += 2; /* QoS > 0 carries a packet id (we subscribe at 0: not expected) */
        if (off > rem) return;
        cb(arg, (const char *)body + 2, tlen, (const char *)body + off, rem - off);
        break;
    }
    default:
        break; /* PINGRESP and anything else */
    }
}

/* Parses whole packets from buf[0..len); returns bytes used, or -EPROTO. */
static long mqtt__parse(nb_mqtt *m, const uint8_t *buf, size_t len, nb_mqtt_on_publish cb,
                        void *arg)
{
    size_t pos = 0;
    while (pos + 2 <= len) {
        size_t rem = 0, mult = 1, i = pos + 1;
        bool whole_len = false;
        for (int k = 0; k < 4 && i < len; k++, i++) {
            rem += (size_t)(buf[i] & 0x7f) * mult;
            mult *= 128;
            if (!(buf[i] & 0x80)) {
                whole_len = true;
                i++;
                break;
            }
        }
        if (!whole_len) {
            if (i - pos - 1 >= 4) return -EPROTO;
            break; /* the length itself is cut */
        }
        if (rem > MQTT_MAX_PACKET) return -EPROTO;
        size_t hdr_len = i - pos;
        if (len - pos < hdr_len + rem) break;
        mqtt__packet(m, buf + pos, hdr_len, rem, cb, arg);
        pos += hdr_len + rem;
    }
    return (long)pos;
}

int nb_mqtt_on_readable(nb_mqtt *m, nb_mqtt_on_publish cb, void *arg)
{
    uint8_t chunk[MQTT_READ_CHUNK];
    for (;;) {
        if (m->dead) return -ECONNRESET;
        ssize_t n = recv(m->fd, chunk, sizeof chunk, 0);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN) return 0;
            m->dead = true;
            return -errno;
        }
        if (n == 0) {
            m->dead = true;
            return -ECONNRESET;
        }
        long used;
        if (m->in.len == 0) {
            used = mqtt__parse(m, chunk, (size_t)n, cb, arg);
            if (used < 0) goto bad;
            if ((size_t)used < (size_t)n &&
                nt_buf_append(&m->in, chunk + used, (size_t)n - (size_t)used))
                goto bad;
        } else {
            if (nt_buf_append(&m->in, chunk, (size_t)n)) goto bad;
            used = mqtt__parse(m, (const uint8_t *)m->in.data, m->in.len, cb, arg);
            if (used < 0) goto bad;
            nt_buf_consume(&m->in, (size_t)used);
            if (m->in.len == 0) nt_buf_free(&m->in);
        }
        if ((size_t)n < sizeof chunk) return 0;
    }
bad:
    m->dead = true;
    return -EPROTO;
}
