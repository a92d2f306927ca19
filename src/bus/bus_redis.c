/*
 * The Redis bus back end (URL "redis://HOST:PORT[?node=NAME]"): the bus of
 * a cluster, where every natterd process is one node and Redis is the only
 * thing they share besides the store. Same contract as the in-process back
 * end (bus.h); what differs is where the state lives. Every key starts with
 * "natter:".
 *
 *  - Registry and presence: `natter:u:<user>` is a hash node -> number of
 *    that user's connections on that node; `natter:nu:<node>` the set of
 *    users a node holds; `natter:alive:<node>` a heartbeat key with a TTL
 *    (RB_ALIVE_TTL_MS), renewed every second; `natter:nodes` the set of
 *    nodes. Counts of a node whose heartbeat key expired (a crashed or
 *    frozen node) are ignored at once and removed by the next heartbeat of
 *    any live node. A node whose own heartbeat key is gone (Redis
 *    restarted, or it was frozen longer than the TTL) rewrites its whole
 *    registry from the local copy it keeps. Each node keeps its own counts
 *    in memory: local deliveries and nt_bus_online for local users never
 *    wait for Redis. The loop thread only counts a change and queues it;
 *    the registry thread sends the queue to Redis in order (one script per
 *    batch, which also answers each user's live total), and tells the
 *    loop which changes were a first connection anywhere or a last one
 *    gone (the presence handler) and which flushes were reached.
 *  - Deliveries: one pub/sub channel per node, `natter:deliver:<node>`. On
 *    a delivery, local recipients are handed to the handler at once (on the
 *    loop thread) or through the loop's queue (other threads); for the rest
 *    one Lua script looks up which live nodes hold the users and publishes
 *    one message per node: "<id>,<id>,...\n<frame>". The node's subscriber
 *    connection gives it to the delivery handler on the loop thread.
 *  - Work queues: a Stream `natter:q:<queue>` with one consumer group;
 *    jobs are taken with XREADGROUP inside a Lua script that also records
 *    the job's visibility deadline (Redis time) in the sorted set
 *    `natter:qv:<queue>`; a job whose deadline passed is taken again with
 *    XCLAIM, before newer jobs. Ack is XACK + XDEL, so XLEN is the depth
 *    (waiting plus taken). Idle workers block in XREAD on the stream.
 *  - Request/reply: calls go on the list `natter:svc:<service>` (LPUSH,
 *    servers BRPOP); the caller waits on `natter:r:<correlation id>` (BLPOP)
 *    while the key `natter:w:<correlation id>` says it still waits. A
 *    caller that gives up deletes that key and withdraws its call if no
 *    server took it; a late reply is then not stored.
 *  - Leader lock: `natter:leader:<name>` = this bus's token, SET NX PX, and
 *    renewed by a script only while the value is still ours.
 *
 * Threads and connections: two asynchronous connections on the loop (the
 * subscriber, and one for what the loop sends without waiting: deliveries
 * and queue pushes); the registry thread's own synchronous connection
 * (registry changes, heartbeat, registry rewrites, leaving at close); and
 * one synchronous connection per other calling thread (thread-specific
 * data) for everything that needs an answer. The loop thread never waits
 * for Redis: its timer only starts reconnects of its asynchronous
 * connections, and nt_bus_online on the loop answers from local counts.
 * Blocking calls (pop, serve, request) never block inside Redis for more
 * than a second at a time, and nt_bus_close shuts their sockets down to
 * wake them.
 *
 * Redis down: calls answer NT_BUS_EUNAVAILABLE (waiting calls retry until
 * their timeout first), nt_bus_ping fails (/readyz answers 503), and the
 * connections are tried again every second; nothing needs a restart.
 * Registry changes of that time are kept; once the registry is written
 * back, their presence transitions are decided and told, each once, also
 * when Redis fails again halfway through (rb__reg_decide).
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <hiredis/sds.h>
#include <openssl/evp.h>

#include "bus/bus_backend.h"
#include "bus/conn_counts.h"
#include "bus/inbox.h"
#include "common/clock.h"
#include "common/log.h"

#define RB_PREFIX "natter:"
#define RB_GROUP "workers"
#define RB_ALIVE_TTL_MS 5000
#define RB_TICK_MS 1000
#define RB_REG_TIMEOUT_MS 1000 /* a command of the registry thread */
#define RB_CMD_TIMEOUT_MS 3000 /* a command of any other thread */
#define RB_REG_BATCH 256       /* registry changes sent in one script call */
#define RB_CONNECT_TIMEOUT_MS 500
#define RB_RETRY_MS 200        /* between connection attempts of one thread */
#define RB_BLOCK_SLICE_MS 1000 /* longest single wait inside Redis */
#define RB_DEFAULT_VISIBILITY_MS 30000
#define RB_REPLY_TTL_MS 60000 /* a reply nobody read disappears after this */
#define RB_DELIVERY_QUEUE_MAX ((size_t)256 << 20)
/* Commands the loop queued on its asynchronous connection and Redis has not
 * taken yet (a frozen or slow Redis): past this, deliveries and pushes from
 * the loop answer unavailable instead of growing the buffer without end. */
#define RB_PUB_BACKLOG_MAX ((size_t)64 << 20)
#define RB_MAX_LEADER_NAMES 16
#define RB_NEVER UINT64_MAX

/* ---- Lua scripts ------------------------------------------------------------ */

/* live(uid, self): the user's connections on live nodes; `self` counts even
 * before its heartbeat key is back (right after Redis restarted). */
#define RB_LUA_LIVE                                                                                \
    "local P = 'natter:'\n"                                                                        \
    "local function live(uid, self)\n"                                                             \
    "  local h = redis.call('HGETALL', P .. 'u:' .. uid)\n"                                        \
    "  local t = 0\n"                                                                              \
    "  for j = 1, #h, 2 do\n"                                                                      \
    "    if h[j] == self or redis.call('EXISTS', P .. 'alive:' .. h[j]) == 1 then\n"               \
    "      t = t + tonumber(h[j + 1])\n"                                                           \
    "    end\n"                                                                                    \
    "  end\n"                                                                                      \
    "  return t\n"                                                                                 \
    "end\n"

enum {
    S_DELIVER,
    S_REG,
    S_OTHERS,
    S_ONLINE,
    S_BEAT,
    S_SYNC,
    S_LEAVE,
    S_TAKE,
    S_ACK,
    S_CALL,
    S_CANCEL,
    S_REPLY,
    S_LEADER,
    S_RESIGN,
    S_MQ_JOIN,
    S_MQ_LEAVE,
    S_COUNT
};

static const char *const rb_scripts[S_COUNT] = {
    /* ARGV: self node, frame, user ids... */
    [S_DELIVER] = "local P = 'natter:'\n"
                  "local per, order = {}, {}\n"
                  "for i = 3, #ARGV do\n"
                  "  local h = redis.call('HGETALL', P .. 'u:' .. ARGV[i])\n"
                  "  for j = 1, #h, 2 do\n"
                  "    local node = h[j]\n"
                  "    if node ~= ARGV[1] and tonumber(h[j + 1]) > 0 then\n"
                  "      if not per[node] then per[node] = {}; order[#order + 1] = node end\n"
                  "      local t = per[node]; t[#t + 1] = ARGV[i]\n"
                  "    end\n"
                  "  end\n"
                  "end\n"
                  "local sent = 0\n"
                  "for _, node in ipairs(order) do\n"
                  "  if redis.call('EXISTS', P .. 'alive:' .. node) == 1 then\n"
                  "    redis.call('PUBLISH', P .. 'deliver:' .. node,\n"
                  "               table.concat(per[node], ',') .. '\\n' .. ARGV[2])\n"
                  "    sent = sent + 1\n"
                  "  end\n"
                  "end\n"
                  "return sent\n",
    /* ARGV: node, epoch token, epoch counter, then delta (1 or -1), user
     * for each change, in the order they were made -> each user's live
     * connections after its change; 0 (nothing done) if the node's epoch in
     * Redis is another one: a call that timed out and reached Redis after
     * the node had rewritten its registry must not count twice. */
    [S_REG] = RB_LUA_LIVE "local node = ARGV[1]\n"
                          "local ep = redis.call('HMGET', P .. 'ep:' .. node, 't', 'c')\n"
                          "if ep[1] ~= ARGV[2] or ep[2] ~= ARGV[3] then return 0 end\n"
                          "local out = {}\n"
                          "for i = 4, #ARGV, 2 do\n"
                          "  local uid = ARGV[i + 1]\n"
                          "  local c = redis.call('HINCRBY', P .. 'u:' .. uid, node, ARGV[i])\n"
                          "  if c > 0 then\n"
                          "    redis.call('SADD', P .. 'nu:' .. node, uid)\n"
                          "  else\n"
                          "    redis.call('HDEL', P .. 'u:' .. uid, node)\n"
                          "    redis.call('SREM', P .. 'nu:' .. node, uid)\n"
                          "  end\n"
                          "  out[#out + 1] = live(uid, node)\n"
                          "end\n"
                          "return out\n",
    /* ARGV: node, users... -> each user's connections on other live nodes. */
    [S_OTHERS] =
        "local P = 'natter:'\n"
        "local out = {}\n"
        "for i = 2, #ARGV do\n"
        "  local h = redis.call('HGETALL', P .. 'u:' .. ARGV[i])\n"
        "  local t = 0\n"
        "  for j = 1, #h, 2 do\n"
        "    if h[j] ~= ARGV[1] and redis.call('EXISTS', P .. 'alive:' .. h[j]) == 1 then\n"
        "      t = t + tonumber(h[j + 1])\n"
        "    end\n"
        "  end\n"
        "  out[#out + 1] = t\n"
        "end\n"
        "return out\n",
    /* ARGV: node, user */
    [S_ONLINE] = RB_LUA_LIVE "return live(ARGV[2], ARGV[1])\n",
    /* ARGV: node, ttl. Renews the heartbeat (0 if it had expired: the caller
     * rewrites its registry) and removes the counts of dead nodes. */
    [S_BEAT] = "local P = 'natter:'\n"
               "local ok = redis.call('SET', P .. 'alive:' .. ARGV[1], '1', 'PX', ARGV[2], 'XX')\n"
               "redis.call('SADD', P .. 'nodes', ARGV[1])\n"
               "for _, n in ipairs(redis.call('SMEMBERS', P .. 'nodes')) do\n"
               "  if n ~= ARGV[1] and redis.call('EXISTS', P .. 'alive:' .. n) == 0 then\n"
               "    for _, u in ipairs(redis.call('SMEMBERS', P .. 'nu:' .. n)) do\n"
               "      redis.call('HDEL', P .. 'u:' .. u, n)\n"
               "    end\n"
               "    redis.call('DEL', P .. 'nu:' .. n, P .. 'ep:' .. n)\n"
               "    redis.call('SREM', P .. 'nodes', n)\n"
               "  end\n"
               "end\n"
               "if ok then return 1 end\n"
               "return 0\n",
    /* ARGV: node, ttl, epoch token, epoch counter, user, count, user,
     * count... Replaces the node's registry and makes the epoch current;
     * 0 (nothing done) for an older epoch of the same process (a rewrite
     * that timed out and reached Redis after a newer one). */
    [S_SYNC] = "local P = 'natter:'\n"
               "local node = ARGV[1]\n"
               "local ep = redis.call('HMGET', P .. 'ep:' .. node, 't', 'c')\n"
               "if ep[1] == ARGV[3] and tonumber(ep[2]) >= tonumber(ARGV[4]) then return 0 end\n"
               "redis.call('HSET', P .. 'ep:' .. node, 't', ARGV[3], 'c', ARGV[4])\n"
               "for _, u in ipairs(redis.call('SMEMBERS', P .. 'nu:' .. node)) do\n"
               "  redis.call('HDEL', P .. 'u:' .. u, node)\n"
               "end\n"
               "redis.call('DEL', P .. 'nu:' .. node)\n"
               "for i = 5, #ARGV, 2 do\n"
               "  redis.call('HSET', P .. 'u:' .. ARGV[i], node, ARGV[i + 1])\n"
               "  redis.call('SADD', P .. 'nu:' .. node, ARGV[i])\n"
               "end\n"
               "redis.call('SET', P .. 'alive:' .. node, '1', 'PX', ARGV[2])\n"
               "redis.call('SADD', P .. 'nodes', node)\n"
               "return 1\n",
    /* ARGV: node */
    [S_LEAVE] = "local P = 'natter:'\n"
                "for _, u in ipairs(redis.call('SMEMBERS', P .. 'nu:' .. ARGV[1])) do\n"
                "  redis.call('HDEL', P .. 'u:' .. u, ARGV[1])\n"
                "end\n"
                "redis.call('DEL', P .. 'nu:' .. ARGV[1], P .. 'alive:' .. ARGV[1],\n"
                "            P .. 'ep:' .. ARGV[1])\n"
                "redis.call('SREM', P .. 'nodes', ARGV[1])\n"
                "return 1\n",
    /* KEYS: stream, visibility set. ARGV: group, consumer, visibility ms.
     * Returns {id, payload}, or {'', last id, ms until a deadline or -1}. */
    [S_TAKE] =
        "local t = redis.call('TIME')\n"
        "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
        "local vis = tonumber(ARGV[3])\n"
        "while true do\n"
        "  local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, 1)\n"
        "  if #due == 0 then break end\n"
        "  local id = due[1]\n"
        "  local ok, e = pcall(redis.call, 'XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, id)\n"
        "  if ok and e[1] and e[1][2] then\n"
        "    redis.call('ZADD', KEYS[2], now + vis, id)\n"
        "    return {id, e[1][2][2]}\n"
        "  end\n"
        "  redis.call('ZREM', KEYS[2], id)\n"
        "end\n"
        "local ok, r = pcall(redis.call, 'XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', 1,\n"
        "                    'STREAMS', KEYS[1], '>')\n"
        "if not ok then\n"
        "  redis.call('XGROUP', 'CREATE', KEYS[1], ARGV[1], '0', 'MKSTREAM')\n"
        "  r = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', 1,\n"
        "                 'STREAMS', KEYS[1], '>')\n"
        "end\n"
        "if r and r[1] and r[1][2][1] then\n"
        "  local e = r[1][2][1]\n"
        "  redis.call('ZADD', KEYS[2], now + vis, e[1])\n"
        "  return {e[1], e[2][2]}\n"
        "end\n"
        "local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)\n"
        "local last_id = '0-0'\n"
        "if last[1] then last_id = last[1][1] end\n"
        "local first = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')\n"
        "local wait = -1\n"
        "if first[2] then wait = math.max(0, tonumber(first[2]) - now) end\n"
        "return {'', last_id, wait}\n",
    /* KEYS: stream, visibility set. ARGV: group, id. Returns 1 if it was
     * there. */
    [S_ACK] = "pcall(redis.call, 'XACK', KEYS[1], ARGV[1], ARGV[2])\n"
              "local n = redis.call('XDEL', KEYS[1], ARGV[2])\n"
              "redis.call('ZREM', KEYS[2], ARGV[2])\n"
              "return n\n",
    /* KEYS: service list, wait key. ARGV: call, ttl ms. */
    [S_CALL] = "redis.call('SET', KEYS[2], '1', 'PX', ARGV[2])\n"
               "redis.call('LPUSH', KEYS[1], ARGV[1])\n"
               "return 1\n",
    /* KEYS: service list, wait key, reply list. ARGV: call. */
    [S_CANCEL] = "redis.call('DEL', KEYS[2], KEYS[3])\n"
                 "return redis.call('LREM', KEYS[1], 1, ARGV[1])\n",
    /* KEYS: wait key, reply list. ARGV: reply, ttl ms. */
    [S_REPLY] = "if redis.call('EXISTS', KEYS[1]) == 1 then\n"
                "  redis.call('RPUSH', KEYS[2], ARGV[1])\n"
                "  redis.call('PEXPIRE', KEYS[2], ARGV[2])\n"
                "end\n"
                "return 0\n",
    /* KEYS: lock. ARGV: token, ttl ms. */
    [S_LEADER] = "if redis.call('GET', KEYS[1]) == ARGV[1] then\n"
                 "  redis.call('PEXPIRE', KEYS[1], ARGV[2])\n"
                 "  return 1\n"
                 "end\n"
                 "if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end\n"
                 "return 0\n",
    [S_RESIGN] = "if redis.call('GET', KEYS[1]) == ARGV[1] then\n"
                 "  return redis.call('DEL', KEYS[1])\n"
                 "end\n"
                 "return 0\n",
    /* The shared match queue. natter:mq:e:USER is a waiting user's hash
     * (g gender bit, a age, lo/hi age range, k its bucket, n its node, i
     * its interest tag hashes, comma-separated hex); a bucket
     * natter:mq:b:GENDER:AGE:WANTED is a sorted set of users by arrival. A
     * candidate whose node is no longer alive is dropped. ARGV: user,
     * gender, age, genders, age_min, age_max, scan cap, node, arrival (0: a
     * new one), number of interests, interests..., blocked users... Of the
     * compatible candidates examined (the first `cap` of each bucket), the
     * one sharing the most interests wins, the oldest among equals, as in
     * the in-process matcher. Returns {1} already waiting, {0} now waiting,
     * or {2, partner, gender, age, genders, lo, hi, interests, node,
     * arrival}: the partner's whole entry, so that a partner whose chat
     * could not be stored can be put back as it was (cap 0 with its node
     * and arrival). The search, the partner's removal and the insertion are
     * one script, so two nodes can never take the same partner. */
    [S_MQ_JOIN] =
        "local P = 'natter:mq:'\n"
        "local me = ARGV[1]\n"
        "local mine = redis.call('HMGET', P .. 'e:' .. me, 'k', 'n')\n"
        "if mine[1] then\n"
        "  if not mine[2] or redis.call('EXISTS', 'natter:alive:' .. mine[2]) == 1 then\n"
        "    return {1}\n"
        "  end\n"
        "  redis.call('ZREM', mine[1], me)\n"
        "  redis.call('DEL', P .. 'e:' .. me)\n"
        "end\n"
        "local g, age, gs = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])\n"
        "local lo, hi, cap = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])\n"
        "local ni = tonumber(ARGV[10])\n"
        "local tags, mytags = {}, {}\n"
        "for i = 11, 10 + ni do tags[ARGV[i]] = true; mytags[#mytags + 1] = ARGV[i] end\n"
        "local blocked = {}\n"
        "for i = 11 + ni, #ARGV do blocked[ARGV[i]] = true end\n"
        "local best, best_seq, best_key, best_shared, best_mask, best_score\n"
        "if cap > 0 then\n"
        "  for _, cg in ipairs({1, 2, 4}) do\n"
        "    if bit.band(gs, cg) ~= 0 then\n"
        "      for a = lo, hi do\n"
        "        for mask = 1, 7 do\n"
        "          if bit.band(mask, g) ~= 0 then\n"
        "            local key = P .. 'b:' .. cg .. ':' .. a .. ':' .. mask\n"
        "            local c = redis.call('ZRANGE', key, 0, cap - 1, 'WITHSCORES')\n"
        "            for j = 1, #c, 2 do\n"
        "              local id = c[j]\n"
        "              if id ~= me and not blocked[id] then\n"
        "                local r = redis.call('HMGET', P .. 'e:' .. id, 'lo', 'hi', 'n', 'i')\n"
        "                if r[1] and r[3] and\n"
        "                   redis.call('EXISTS', 'natter:alive:' .. r[3]) == 0 then\n"
        "                  redis.call('DEL', P .. 'e:' .. id)\n"
        "                  r[1] = false\n"
        "                end\n"
        "                if r[1] and age >= tonumber(r[1]) and age <= tonumber(r[2]) then\n"
        "                  local seq = tonumber(c[j + 1])\n"
        "                  local shared = 0\n"
        "                  if ni > 0 and r[4] then\n"
        "                    for t in string.gmatch(r[4], '[^,]+') do\n"
        "                      if tags[t] then shared = shared + 1 end\n"
        "                    end\n"
        "                  end\n"
        "                  if not best or shared > best_shared or\n"
        "                     (shared == best_shared and seq < best_seq) then\n"
        "                    best, best_seq, best_key, best_shared = id, seq, key, shared\n"
        "                    best_mask, best_score = mask, c[j + 1]\n"
        "                  end\n"
        "                  -- later ones in this bucket are newer: none can do better\n"
        "                  if shared == ni then break end\n"
        "                elseif not r[1] then\n"
        "                  redis.call('ZREM', key, id)\n"
        "                end\n"
        "              end\n"
        "            end\n"
        "          end\n"
        "        end\n"
        "      end\n"
        "    end\n"
        "  end\n"
        "end\n"
        "if best then\n"
        "  local r = redis.call('HMGET', P .. 'e:' .. best, 'g', 'a', 'lo', 'hi', 'i', 'n')\n"
        "  redis.call('ZREM', best_key, best)\n"
        "  redis.call('DEL', P .. 'e:' .. best)\n"
        "  return {2, best, r[1], r[2], tostring(best_mask), r[3], r[4], r[5] or '', r[6] or '',\n"
        "          best_score}\n"
        "end\n"
        "local key = P .. 'b:' .. g .. ':' .. age .. ':' .. gs\n"
        "redis.call('HSET', P .. 'e:' .. me, 'g', g, 'a', age, 'lo', lo, 'hi', hi, 'k', key,\n"
        "           'n', ARGV[8], 'i', table.concat(mytags, ','))\n"
        "local seq = ARGV[9]\n"
        "if seq == '0' then seq = redis.call('INCR', P .. 'seq') end\n"
        "redis.call('ZADD', key, seq, me)\n"
        "return {0}\n",
    /* ARGV: user. 1 if it was waiting. */
    [S_MQ_LEAVE] = "local P = 'natter:mq:'\n"
                   "local key = redis.call('HGET', P .. 'e:' .. ARGV[1], 'k')\n"
                   "if not key then return 0 end\n"
                   "redis.call('ZREM', key, ARGV[1])\n"
                   "redis.call('DEL', P .. 'e:' .. ARGV[1])\n"
                   "return 1\n",
};

/* ---- state -------------------------------------------------------------------- */

struct redis_bus;

/* One thread's synchronous connection. Owned by the bus (freed at close);
 * lent to one thread at a time through thread-specific data. */
struct rb_conn {
    struct rb_conn *next;
    struct redis_bus *rb;
    redisContext *ctx; /* NULL while down */
    uint64_t retry_after_ns;
    bool in_use;
    bool blocked;  /* inside a blocking command: close may shut its socket */
    bool registry; /* the registry thread's own (shorter timeouts) */
};

/* One asynchronous connection on the loop. */
struct rb_async {
    struct redis_bus *rb;
    redisAsyncContext *ac; /* NULL while down */
    atomic_bool connected;
    bool is_subscriber;
};

/* The libuv glue for one asynchronous connection (hiredis's event hooks). */
struct rb_ev {
    uv_poll_t poll;
    redisAsyncContext *ac;
    int events;
};

/* A registry change queued by the loop thread for the registry thread. */
struct rb_reg_op {
    int64_t user_id;
    uint64_t seq;          /* order among absorbed changes (rb__absorb) */
    int delta;             /* +1 up, -1 down, 0 a flush marker */
    bool local_edge;       /* this node's count went from or to zero */
    void (*flush)(void *); /* delta 0 */
    void *flush_arg;
};

/* What the registry thread tells the loop: a presence transition or a
 * flush reached. */
struct rb_event {
    int64_t user_id;
    int kind; /* RB_EV_* */
    void (*flush)(void *);
    void *flush_arg;
};

enum { RB_EV_OFFLINE = 0, RB_EV_ONLINE = 1, RB_EV_FLUSH = 2 };

struct redis_bus {
    nt_bus base;
    char host[256];
    int port;
    char node[64];
    char channel[96];
    uint64_t token;
    char token_hex[17];
    uv_thread_t loop_thread;
    char sha[S_COUNT][41];

    pthread_key_t tls;
    pthread_mutex_t mu; /* conns, closed, blocked, leader names */
    pthread_cond_t idle;
    pthread_cond_t wake; /* close wakes threads sleeping between retries */
    bool closed;
    int inside; /* threads inside pop, serve or request */
    struct rb_conn *conns;
    char leader_names[RB_MAX_LEADER_NAMES][64];
    atomic_uint_fast64_t next_call;

    struct rb_async sub, pub;
    uv_timer_t *tick;
    uv_async_t *async;

    /* The registry thread (rb__reg_main) and its own connection. reg_ok:
     * its last command worked and Redis holds this node's registry (for
     * /readyz); need_sync: Redis may not hold it, rewrite it whole. */
    uv_thread_t reg_thread;
    bool reg_started;
    struct rb_conn reg_conn;
    atomic_bool reg_ok;
    atomic_bool need_sync;

    /* reg_lock guards reg; rq_mu the changes queued for the registry
     * thread (taken inside reg_lock, never the other way round). */
    pthread_rwlock_t reg_lock;
    nt_conn_counts reg; /* connections per user on this node */
    pthread_mutex_t rq_mu;
    pthread_cond_t rq_cond; /* a change was queued, or rq_stop */
    bool rq_stop;
    struct rb_reg_op *rq; /* queued by the loop, in order */
    size_t rq_n, rq_cap;
    struct rb_reg_op *rq_work; /* the registry thread's batch (swapped with rq) */
    size_t rq_work_n, rq_work_cap;
    /* Registry thread only: the epoch of the registry it last wrote
     * (S_SYNC), and the changes made while Redis did not answer, whose
     * presence is decided once it does (rb__reg_decide). */
    uint64_t epoch;
    char epoch_str[24];
    struct rb_reg_op *absorbed;
    size_t absorbed_n, absorbed_cap;
    uint64_t absorbed_seq;

    /* The loop's inbox (dq_mu): deliveries from other threads, and presence
     * and flush events from the registry thread, in order. */
    pthread_mutex_t dq_mu;
    nt_inbox dq;
    struct rb_event *ev; /* filled by the registry thread */
    size_t ev_n, ev_cap;
    struct rb_event *ev_loop; /* being run by the loop (swapped with ev) */
    size_t ev_loop_cap;
    pthread_cond_t ev_room; /* the loop took the events (rb__post waits) */
    bool ev_waiting;        /* rb__post waits on ev_room */
    bool ev_stop;           /* closing: rb__post drops instead of waiting */
};

static struct redis_bus *rb__of(nt_bus *b)
{
    return (struct redis_bus *)b;
}

static bool rb__on_loop(const struct redis_bus *rb)
{
    uv_thread_t self = uv_thread_self();
    return uv_thread_equal(&self, &rb->loop_thread);
}

static uint64_t rb__deadline(int timeout_ms)
{
    if (timeout_ms < 0) return RB_NEVER;
    return nt_mono_ns() + (uint64_t)timeout_ms * 1000000u;
}

static int rb__cond_init(pthread_cond_t *cond)
{
    pthread_condattr_t attr;
    int rc = pthread_condattr_init(&attr);
    if (rc) return -rc;
    rc = pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    if (rc == 0) rc = pthread_cond_init(cond, &attr);
    pthread_condattr_destroy(&attr);
    return -rc;
}

static struct timeval rb__tv(int ms)
{
    struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
    return tv;
}

/* ---- synchronous connections --------------------------------------------------- */

static void rb__conn_release(void *arg)
{
    struct rb_conn *conn = arg;
    pthread_mutex_lock(&conn->rb->mu);
    conn->in_use = false;
    pthread_mutex_unlock(&conn->rb->mu);
}

/* This thread's connection record (created on first use). */
static struct rb_conn *rb__conn(struct redis_bus *rb)
{
    struct rb_conn *conn = pthread_getspecific(rb->tls);
    if (conn) return conn;
    pthread_mutex_lock(&rb->mu);
    for (conn = rb->conns; conn && conn->in_use; conn = conn->next)
        ;
    if (!conn) {
        conn = calloc(1, sizeof *conn);
        if (conn) {
            conn->rb = rb;
            conn->next = rb->conns;
            rb->conns = conn;
        }
    }
    if (conn) conn->in_use = true;
    pthread_mutex_unlock(&rb->mu);
    if (conn && pthread_setspecific(rb->tls, conn) != 0) {
        rb__conn_release(conn);
        return NULL;
    }
    return conn;
}

/* The connection's context, connecting if needed (at most once per
 * RB_RETRY_MS). NULL if Redis cannot be reached. */
static redisContext *rb__ctx(struct redis_bus *rb, struct rb_conn *conn)
{
    if (conn->ctx && conn->ctx->err) {
        redisFree(conn->ctx);
        conn->ctx = NULL;
    }
    if (conn->ctx) return conn->ctx;
    uint64_t now = nt_mono_ns();
    if (now < conn->retry_after_ns) return NULL;
    redisContext *c = redisConnectWithTimeout(rb->host, rb->port, rb__tv(RB_CONNECT_TIMEOUT_MS));
    if (!c || c->err) {
        if (c) redisFree(c);
        conn->retry_after_ns = now + (uint64_t)RB_RETRY_MS * 1000000u;
        return NULL;
    }
    redisSetTimeout(c, rb__tv(conn->registry ? RB_REG_TIMEOUT_MS : RB_CMD_TIMEOUT_MS));
    redisEnableKeepAlive(c);
    conn->ctx = c;
    return c;
}

/* Runs one command on this thread's connection. NULL if Redis could not be
 * reached or the connection broke (then it is dropped). */
static redisReply *rb__cmd(struct redis_bus *rb, struct rb_conn *conn, int argc, const char **argv,
                           const size_t *lens)
{
    redisContext *c = rb__ctx(rb, conn);
    if (!c) return NULL;
    redisReply *reply = redisCommandArgv(c, argc, argv, lens);
    if (!reply) {
        redisFree(conn->ctx);
        conn->ctx = NULL;
    }
    return reply;
}

/* The same as rb__cmd for a command that waits up to block_ms inside Redis;
 * nt_bus_close can wake it by shutting the socket down. *closed is set if
 * the bus closed. */
static redisReply *rb__cmd_blocking(struct redis_bus *rb, struct rb_conn *conn, int argc,
                                    const char **argv, const size_t *lens, int block_ms,
                                    bool *closed)
{
    redisContext *c = rb__ctx(rb, conn);
    if (!c) return NULL;
    pthread_mutex_lock(&rb->mu);
    if (rb->closed) {
        pthread_mutex_unlock(&rb->mu);
        *closed = true;
        return NULL;
    }
    conn->blocked = true;
    pthread_mutex_unlock(&rb->mu);

    redisSetTimeout(c, rb__tv(block_ms + RB_CMD_TIMEOUT_MS));
    redisReply *reply = redisCommandArgv(c, argc, argv, lens);

    pthread_mutex_lock(&rb->mu);
    conn->blocked = false;
    if (rb->closed) *closed = true;
    pthread_mutex_unlock(&rb->mu);
    if (!reply) {
        redisFree(conn->ctx);
        conn->ctx = NULL;
    } else {
        redisSetTimeout(c, rb__tv(RB_CMD_TIMEOUT_MS));
    }
    return reply;
}

/* Runs script s with nkeys keys followed by its arguments (argv/lens hold
 * keys then arguments). Loads the script if Redis does not know it. */
static redisReply *rb__eval(struct redis_bus *rb, struct rb_conn *conn, int s, int nkeys, int argc,
                            const char **argv, const size_t *lens)
{
    const char *stack_argv[16];
    size_t stack_lens[16];
    const char **av = stack_argv;
    size_t *al = stack_lens;
    if (argc + 3 > 16) {
        av = malloc((size_t)(argc + 3) * sizeof *av);
        al = malloc((size_t)(argc + 3) * sizeof *al);
        if (!av || !al) {
            free(av);
            free(al);
            return NULL;
        }
    }
    char nkeys_str[16];
    snprintf(nkeys_str, sizeof nkeys_str, "%d", nkeys);
    av[0] = "EVALSHA";
    al[0] = 7;
    av[1] = rb->sha[s];
    al[1] = 40;
    av[2] = nkeys_str;
    al[2] = strlen(nkeys_str);
    for (int i = 0; i < argc; i++) {
        av[i + 3] = argv[i];
        al[i + 3] = lens[i];
    }
    redisReply *reply = rb__cmd(rb, conn, argc + 3, av, al);
    if (reply && reply->type == REDIS_REPLY_ERROR && strncmp(reply->str, "NOSCRIPT", 8) == 0) {
        freeReplyObject(reply);
        av[0] = "EVAL";
        al[0] = 4;
        av[1] = rb_scripts[s];
        al[1] = strlen(rb_scripts[s]);
        reply = rb__cmd(rb, conn, argc + 3, av, al);
    }
    if (av != stack_argv) {
        free(av);
        free(al);
    }
    return reply;
}

static bool rb__is_error(const redisReply *reply)
{
    return !reply || reply->type == REDIS_REPLY_ERROR;
}

static void rb__log_error(const char *what, const redisReply *reply)
{
    if (reply && reply->type == REDIS_REPLY_ERROR) nt_warn("bus: redis %s: %s", what, reply->str);
}

/* Sleeps until deadline_ns (or RB_RETRY_MS from now, whichever is first);
 * false if the bus closed meanwhile. */
static bool rb__pause(struct redis_bus *rb, uint64_t deadline_ns)
{
    uint64_t until = nt_mono_ns() + (uint64_t)RB_RETRY_MS * 1000000u;
    if (deadline_ns < until) until = deadline_ns;
    struct timespec ts = {.tv_sec = (time_t)(until / 1000000000u),
                          .tv_nsec = (long)(until % 1000000000u)};
    pthread_mutex_lock(&rb->mu);
    if (!rb->closed) pthread_cond_timedwait(&rb->wake, &rb->mu, &ts);
    bool open = !rb->closed;
    pthread_mutex_unlock(&rb->mu);
    return open;
}

/* A blocking call (pop, serve, request) starts: close waits for it to end,
 * since a woken caller still uses its connection. False if closed. */
static bool rb__enter(struct redis_bus *rb)
{
    pthread_mutex_lock(&rb->mu);
    bool open = !rb->closed;
    if (open) rb->inside++;
    pthread_mutex_unlock(&rb->mu);
    return open;
}

static void rb__leave(struct redis_bus *rb)
{
    pthread_mutex_lock(&rb->mu);
    if (--rb->inside == 0 && rb->closed) pthread_cond_broadcast(&rb->idle);
    pthread_mutex_unlock(&rb->mu);
}

static bool rb__is_closed(struct redis_bus *rb)
{
    pthread_mutex_lock(&rb->mu);
    bool closed = rb->closed;
    pthread_mutex_unlock(&rb->mu);
    return closed;
}

static char *rb__strndup(const char *bytes, size_t len)
{
    char *copy = malloc(len + 1);
    if (!copy) return NULL;
    if (len) memcpy(copy, bytes, len);
    copy[len] = '\0';
    return copy;
}

/* ---- the libuv glue for hiredis's asynchronous contexts ------------------------ */

static void rb__ev_poll(uv_poll_t *handle, int status, int events)
{
    struct rb_ev *ev = handle->data;
    if (!ev->ac) return;
    /* On a socket error hiredis finds out by reading. */
    if (status < 0 || (events & UV_READABLE)) redisAsyncHandleRead(ev->ac);
    if (ev->ac && status == 0 && (events & UV_WRITABLE)) redisAsyncHandleWrite(ev->ac);
}

static void rb__ev_update(struct rb_ev *ev)
{
    if (ev->events)
        uv_poll_start(&ev->poll, ev->events, rb__ev_poll);
    else
        uv_poll_stop(&ev->poll);
}

static void rb__ev_add_read(void *arg)
{
    struct rb_ev *ev = arg;
    ev->events |= UV_READABLE;
    rb__ev_update(ev);
}

static void rb__ev_del_read(void *arg)
{
    struct rb_ev *ev = arg;
    ev->events &= ~UV_READABLE;
    rb__ev_update(ev);
}

static void rb__ev_add_write(void *arg)
{
    struct rb_ev *ev = arg;
    ev->events |= UV_WRITABLE;
    rb__ev_update(ev);
}

static void rb__ev_del_write(void *arg)
{
    struct rb_ev *ev = arg;
    ev->events &= ~UV_WRITABLE;
    rb__ev_update(ev);
}

static void rb__ev_closed(uv_handle_t *handle)
{
    free(handle->data);
}

static void rb__ev_cleanup(void *arg)
{
    struct rb_ev *ev = arg;
    ev->ac = NULL;
    uv_close((uv_handle_t *)&ev->poll, rb__ev_closed);
}

static int rb__ev_attach(redisAsyncContext *ac, uv_loop_t *loop)
{
    struct rb_ev *ev = calloc(1, sizeof *ev);
    if (!ev) return -1;
    if (uv_poll_init(loop, &ev->poll, ac->c.fd) != 0) {
        free(ev);
        return -1;
    }
    /* Like every handle of the bus, the connection does not keep the loop
     * alive by itself. */
    uv_unref((uv_handle_t *)&ev->poll);
    ev->poll.data = ev;
    ev->ac = ac;
    ac->ev.data = ev;
    ac->ev.addRead = rb__ev_add_read;
    ac->ev.delRead = rb__ev_del_read;
    ac->ev.addWrite = rb__ev_add_write;
    ac->ev.delWrite = rb__ev_del_write;
    ac->ev.cleanup = rb__ev_cleanup;
    return 0;
}

/* ---- deliveries ------------------------------------------------------------------ */

/* Loop thread: hands frame to the handler with the users that have a
 * connection on this node. */
static int rb__deliver_local(struct redis_bus *rb, const int64_t *user_ids, size_t n,
                             const char *frame, size_t len)
{
    nt_bus_delivery_fn fn = rb->base.delivery_fn;
    if (!fn || n == 0) return 0;
    /* Own array per call: the handler may deliver again from inside. */
    int64_t *recipients = malloc(n * sizeof *recipients);
    if (!recipients) return NT_BUS_ENOMEM;
    size_t m = 0;
    pthread_rwlock_rdlock(&rb->reg_lock);
    for (size_t i = 0; i < n; i++) {
        if (nt_conn_counts_get(&rb->reg, user_ids[i]) > 0) recipients[m++] = user_ids[i];
    }
    pthread_rwlock_unlock(&rb->reg_lock);
    int rc = 0;
    if (m > 0) {
        nt_shared *shared = nt_shared_new(frame, len);
        if (!shared) {
            rc = NT_BUS_ENOMEM;
        } else {
            fn(rb->base.delivery_arg, shared, recipients, m);
            nt_shared_unref(shared);
        }
    }
    free(recipients);
    return rc;
}

static void rb__drain(uv_async_t *handle)
{
    struct redis_bus *rb = handle->data;
    if (!rb) return;
    pthread_mutex_lock(&rb->dq_mu);
    nt_inbox_item *all = nt_inbox_take(&rb->dq);
    pthread_mutex_unlock(&rb->dq_mu);
    for (nt_inbox_item *d = all; d; d = d->next)
        rb__deliver_local(rb, d->ids, d->n, nt_inbox_frame(d), d->len);
    nt_inbox_free_chain(all);

    /* Then the registry thread's events, in the order it posted them. */
    pthread_mutex_lock(&rb->dq_mu);
    struct rb_event *evs = rb->ev;
    size_t n = rb->ev_n, cap = rb->ev_cap;
    rb->ev = rb->ev_loop;
    rb->ev_cap = rb->ev_loop_cap;
    rb->ev_n = 0;
    if (rb->ev_waiting) {
        rb->ev_waiting = false;
        pthread_cond_signal(&rb->ev_room);
    }
    pthread_mutex_unlock(&rb->dq_mu);
    rb->ev_loop = evs;
    rb->ev_loop_cap = cap;
    for (size_t i = 0; i < n; i++) {
        if (evs[i].kind == RB_EV_FLUSH)
            evs[i].flush(evs[i].flush_arg);
        else if (rb->base.presence_fn)
            rb->base.presence_fn(rb->base.presence_arg, evs[i].user_id,
                                 evs[i].kind == RB_EV_ONLINE);
    }
}

/* Another thread: the local part goes through the loop's queue. */
static int rb__queue_local(struct redis_bus *rb, const int64_t *user_ids, size_t n,
                           const char *frame, size_t len)
{
    nt_inbox_item *d = nt_inbox_item_new(user_ids, n, frame, len);
    if (!d) return NT_BUS_ENOMEM;
    pthread_mutex_lock(&rb->dq_mu);
    int rc = nt_inbox_push(&rb->dq, d);
    pthread_mutex_unlock(&rb->dq_mu);
    if (rc != 0) {
        free(d);
        return NT_BUS_EUNAVAILABLE;
    }
    uv_async_send(rb->async);
    return 0;
}

/* Builds EVALSHA <deliver> 0 <node> <frame> <ids...>; argv points into ids_buf. */
static int rb__deliver_argv(struct redis_bus *rb, const int64_t *user_ids, size_t n,
                            const char *frame, size_t len, const char ***argv_out,
                            size_t **lens_out, char **ids_buf_out)
{
    size_t argc = n + 5;
    const char **argv = malloc(argc * sizeof *argv);
    size_t *lens = malloc(argc * sizeof *lens);
    char *ids_buf = malloc(n * 21 + 1);
    if (!argv || !lens || !ids_buf) {
        free(argv);
        free(lens);
        free(ids_buf);
        return NT_BUS_ENOMEM;
    }
    argv[0] = "EVALSHA";
    lens[0] = 7;
    argv[1] = rb->sha[S_DELIVER];
    lens[1] = 40;
    argv[2] = "0";
    lens[2] = 1;
    argv[3] = rb->node;
    lens[3] = strlen(rb->node);
    argv[4] = frame;
    lens[4] = len;
    char *p = ids_buf;
    for (size_t i = 0; i < n; i++) {
        int w = sprintf(p, "%" PRId64, user_ids[i]);
        argv[i + 5] = p;
        lens[i + 5] = (size_t)w;
        p += w + 1;
    }
    *argv_out = argv;
    *lens_out = lens;
    *ids_buf_out = ids_buf;
    return (int)argc;
}

static void rb__on_async_reply(redisAsyncContext *ac, void *reply_ptr, void *privdata)
{
    redisReply *reply = reply_ptr;
    rb__log_error(privdata ? privdata : "command", reply);
}

/* True if the loop's asynchronous connection can take one more command. */
static bool rb__pub_ready(struct redis_bus *rb)
{
    return atomic_load(&rb->pub.connected) && rb->pub.ac &&
           sdslen(rb->pub.ac->c.obuf) < RB_PUB_BACKLOG_MAX;
}

static int rb__deliver(nt_bus *b, const int64_t *user_ids, size_t n, const char *frame, size_t len)
{
    struct redis_bus *rb = rb__of(b);
    if (len > UINT32_MAX) return -EMSGSIZE;
    bool loop = rb__on_loop(rb);
    int rc = loop ? rb__deliver_local(rb, user_ids, n, frame, len)
                  : rb__queue_local(rb, user_ids, n, frame, len);
    if (rc) return rc;

    const char **argv;
    size_t *lens;
    char *ids_buf;
    int argc = rb__deliver_argv(rb, user_ids, n, frame, len, &argv, &lens, &ids_buf);
    if (argc < 0) return argc;
    if (loop) {
        /* Fire and forget, in order, on the loop's own connection. */
        if (!rb__pub_ready(rb) || redisAsyncCommandArgv(rb->pub.ac, rb__on_async_reply, "deliver",
                                                        argc, argv, lens) != REDIS_OK)
            rc = NT_BUS_EUNAVAILABLE;
    } else {
        struct rb_conn *conn = rb__conn(rb);
        redisReply *reply = NULL;
        if (conn) {
            reply = rb__cmd(rb, conn, argc, argv, lens);
            if (reply && reply->type == REDIS_REPLY_ERROR &&
                strncmp(reply->str, "NOSCRIPT", 8) == 0) {
                freeReplyObject(reply);
                argv[0] = "EVAL";
                lens[0] = 4;
                argv[1] = rb_scripts[S_DELIVER];
                lens[1] = strlen(rb_scripts[S_DELIVER]);
                reply = rb__cmd(rb, conn, argc, argv, lens);
            }
        }
        if (rb__is_error(reply)) {
            rb__log_error("deliver", reply);
            rc = NT_BUS_EUNAVAILABLE;
        }
        if (reply) freeReplyObject(reply);
    }
    free(argv);
    free(lens);
    free(ids_buf);
    return rc;
}

/* A message on this node's channel: "<id>,<id>,...\n<frame>". */
static void rb__on_message(redisAsyncContext *ac, void *reply_ptr, void *privdata)
{
    struct redis_bus *rb = privdata;
    redisReply *reply = reply_ptr;
    if (!reply || reply->type != REDIS_REPLY_ARRAY || reply->elements != 3 ||
        reply->element[0]->type != REDIS_REPLY_STRING ||
        strcmp(reply->element[0]->str, "message") != 0 ||
        reply->element[2]->type != REDIS_REPLY_STRING)
        return;
    const char *data = reply->element[2]->str;
    size_t data_len = reply->element[2]->len;
    const char *nl = memchr(data, '\n', data_len);
    if (!nl) return;
    size_t n = 1;
    for (const char *p = data; p < nl; p++)
        n += *p == ',';
    int64_t stack_ids[64] = {0};
    int64_t *ids = n <= 64 ? stack_ids : malloc(n * sizeof *ids);
    if (!ids) return;
    size_t m = 0;
    const char *p = data;
    while (p < nl && m < n) {
        char *end;
        long long v = strtoll(p, &end, 10);
        if (end == p) break;
        ids[m++] = v;
        p = end + (end < nl && *end == ',');
    }
    rb__deliver_local(rb, ids, m, nl + 1, data_len - (size_t)(nl + 1 - data));
    if (ids != stack_ids) free(ids);
}

/* ---- asynchronous connections: connect, reconnect ------------------------------ */

static void rb__async_connect(struct rb_async *a);

static void rb__on_async_connected(const redisAsyncContext *ac, int status)
{
    struct rb_async *a = ac->data;
    if (status != REDIS_OK) {
        a->ac = NULL; /* hiredis frees it after this callback */
        return;
    }
    struct redis_bus *rb = a->rb;
    if (a->is_subscriber) {
        redisAsyncCommand(a->ac, rb__on_message, rb, "SUBSCRIBE %s", rb->channel);
    } else {
        /* Before any EVALSHA on this connection: it runs first. */
        redisAsyncCommand(a->ac, rb__on_async_reply, "script load", "SCRIPT LOAD %s",
                          rb_scripts[S_DELIVER]);
    }
    atomic_store(&a->connected, true);
    nt_info("bus: redis %s connection up (%s:%d node=%s)",
            a->is_subscriber ? "subscriber" : "publisher", rb->host, rb->port, rb->node);
}

static void rb__on_async_disconnected(const redisAsyncContext *ac, int status)
{
    struct rb_async *a = ac->data;
    bool was = atomic_exchange(&a->connected, false);
    a->ac = NULL;
    if (was && !a->rb->closed)
        nt_warn("bus: redis %s connection lost; reconnecting",
                a->is_subscriber ? "subscriber" : "publisher");
}

static void rb__async_connect(struct rb_async *a)
{
    struct redis_bus *rb = a->rb;
    redisAsyncContext *ac = redisAsyncConnect(rb->host, rb->port);
    if (!ac) return;
    if (ac->err || rb__ev_attach(ac, rb->base.loop) != 0) {
        redisAsyncFree(ac);
        return;
    }
    ac->data = a;
    redisAsyncSetConnectCallback(ac, rb__on_async_connected);
    redisAsyncSetDisconnectCallback(ac, rb__on_async_disconnected);
    a->ac = ac;
}

/* ---- registry and presence ------------------------------------------------------- */

/*
 * The loop thread counts each change in `reg` and queues it (rq); the
 * registry thread takes the queue in order and sends it to Redis, one S_REG
 * call per batch, which answers each user's live total after its change:
 * 1 after an up is a first connection anywhere, 0 after a down the last one
 * gone. It posts those transitions and the flush markers it passes to the
 * loop, in order.
 *
 * When Redis does not answer (need_sync), changes are "absorbed": counted
 * locally only, flush markers answered at once. At each tick the thread
 * then rewrites the node's whole registry (S_SYNC, with a new epoch so a
 * late S_REG from before cannot count twice); every change queued until
 * then is in that snapshot, since a change is counted and queued under one
 * reg_lock. Once the rewrite worked, each absorbed user whose connections
 * here went from none to some (or back) is a transition if no other live
 * node holds it (S_OTHERS): presence catches up after the outage.
 */

/* Registry thread: takes the changes the loop queued (rq) as the batch to
 * send (rq_work), leaving the loop an empty array to fill. */
static void rb__rq_take(struct redis_bus *rb)
{
    pthread_mutex_lock(&rb->rq_mu);
    struct rb_reg_op *work = rb->rq_work;
    size_t work_cap = rb->rq_work_cap;
    rb->rq_work = rb->rq;
    rb->rq_work_cap = rb->rq_cap;
    rb->rq_work_n = rb->rq_n;
    rb->rq = work;
    rb->rq_cap = work_cap;
    rb->rq_n = 0;
    pthread_mutex_unlock(&rb->rq_mu);
}

/* Writes this node's registry to Redis as the whole truth about it, under
 * a new epoch (at open, after a reconnect, or when our heartbeat key had
 * expired). With `take` the queued changes, which the snapshot holds,
 * move to rq_work in the same step. */
static int rb__sync_registry(struct redis_bus *rb, struct rb_conn *conn, bool take)
{
    rb->epoch++;
    snprintf(rb->epoch_str, sizeof rb->epoch_str, "%" PRIu64, rb->epoch);
    pthread_rwlock_rdlock(&rb->reg_lock);
    if (take) rb__rq_take(rb);
    size_t n = rb->reg.used;
    size_t argc = 4 + 2 * n;
    const char **argv = malloc(argc * sizeof *argv);
    size_t *lens = malloc(argc * sizeof *lens);
    char *buf = malloc(n * 32 + 32);
    if (!argv || !lens || !buf) {
        pthread_rwlock_unlock(&rb->reg_lock);
        free(argv);
        free(lens);
        free(buf);
        return NT_BUS_ENOMEM;
    }
    char ttl[16];
    argv[0] = rb->node;
    lens[0] = strlen(rb->node);
    argv[1] = ttl;
    lens[1] = (size_t)snprintf(ttl, sizeof ttl, "%d", RB_ALIVE_TTL_MS);
    argv[2] = rb->token_hex;
    lens[2] = strlen(rb->token_hex);
    argv[3] = rb->epoch_str;
    lens[3] = strlen(rb->epoch_str);
    char *p = buf;
    size_t k = 4;
    for (size_t i = 0; i < rb->reg.cap; i++) {
        const nt_conn_count_slot *slot = &rb->reg.slots[i];
        if (!slot->conns) continue;
        int w = sprintf(p, "%" PRId64, slot->user_id);
        argv[k] = p;
        lens[k++] = (size_t)w;
        p += w + 1;
        w = sprintf(p, "%" PRIu32, slot->conns);
        argv[k] = p;
        lens[k++] = (size_t)w;
        p += w + 1;
    }
    pthread_rwlock_unlock(&rb->reg_lock);
    redisReply *reply = rb__eval(rb, conn, S_SYNC, 0, (int)k, argv, lens);
    int rc = reply && reply->type == REDIS_REPLY_INTEGER && reply->integer == 1
                 ? 0
                 : NT_BUS_EUNAVAILABLE;
    rb__log_error("registry sync", reply);
    if (reply) freeReplyObject(reply);
    free(argv);
    free(lens);
    free(buf);
    return rc;
}

/* Loop thread (or conn_down's caller), under reg_lock: queues one change
 * for the registry thread. 0 or NT_BUS_ENOMEM. */
static int rb__rq_push(struct redis_bus *rb, const struct rb_reg_op *op)
{
    pthread_mutex_lock(&rb->rq_mu);
    if (rb->rq_n == rb->rq_cap) {
        size_t cap = rb->rq_cap ? rb->rq_cap * 2 : 256;
        struct rb_reg_op *grown = realloc(rb->rq, cap * sizeof *grown);
        if (!grown) {
            pthread_mutex_unlock(&rb->rq_mu);
            return NT_BUS_ENOMEM;
        }
        rb->rq = grown;
        rb->rq_cap = cap;
    }
    rb->rq[rb->rq_n++] = *op;
    if (rb->rq_n == 1) pthread_cond_signal(&rb->rq_cond);
    pthread_mutex_unlock(&rb->rq_mu);
    return 0;
}

static int rb__conn_up(nt_bus *b, int64_t user_id)
{
    struct redis_bus *rb = rb__of(b);
    int rc = 0;
    pthread_rwlock_wrlock(&rb->reg_lock);
    int64_t before = nt_conn_counts_add(&rb->reg, user_id, +1);
    if (before < 0) {
        rc = NT_BUS_ENOMEM;
    } else {
        struct rb_reg_op op = {.user_id = user_id, .delta = +1, .local_edge = before == 0};
        if (rb__rq_push(rb, &op) != 0) {
            nt_conn_counts_add(&rb->reg, user_id, -1);
            rc = NT_BUS_ENOMEM;
        }
    }
    pthread_rwlock_unlock(&rb->reg_lock);
    return rc;
}

static int rb__conn_down(nt_bus *b, int64_t user_id)
{
    struct redis_bus *rb = rb__of(b);
    pthread_rwlock_wrlock(&rb->reg_lock);
    int64_t before = nt_conn_counts_add(&rb->reg, user_id, -1);
    /* before 0: unbalanced, ignored as in the local back end. A change that
     * cannot be queued is not lost for Redis: the next tick rewrites all. */
    if (before > 0) {
        struct rb_reg_op op = {.user_id = user_id, .delta = -1, .local_edge = before == 1};
        if (rb__rq_push(rb, &op) != 0) atomic_store(&rb->need_sync, true);
    }
    pthread_rwlock_unlock(&rb->reg_lock);
    return 0;
}

static int rb__registry_flush(nt_bus *b, void (*fn)(void *arg), void *arg)
{
    struct redis_bus *rb = rb__of(b);
    struct rb_reg_op op = {.flush = fn, .flush_arg = arg};
    return rb__rq_push(rb, &op);
}

static bool rb__online(nt_bus *b, int64_t user_id)
{
    struct redis_bus *rb = rb__of(b);
    pthread_rwlock_rdlock(&rb->reg_lock);
    bool here = nt_conn_counts_get(&rb->reg, user_id) > 0;
    pthread_rwlock_unlock(&rb->reg_lock);
    if (here) return true;
    if (rb__on_loop(rb)) return false; /* the loop never waits for Redis */
    struct rb_conn *conn = rb__conn(rb);
    if (!conn) return false;
    char uid[24];
    const char *argv[2] = {rb->node, uid};
    size_t lens[2] = {strlen(rb->node), (size_t)snprintf(uid, sizeof uid, "%" PRId64, user_id)};
    redisReply *reply = rb__eval(rb, conn, S_ONLINE, 0, 2, argv, lens);
    bool online = reply && reply->type == REDIS_REPLY_INTEGER && reply->integer > 0;
    rb__log_error("online", reply);
    if (reply) freeReplyObject(reply);
    return online;
}

/* ---- the registry thread -------------------------------------------------------- */

/*
 * Registry thread: hands n <= RB_REG_BATCH events to the loop, in order.
 * Nothing is dropped while the bus is open: a flush is how a connection
 * gets its `ready` (nt_bus_registry_flush), so losing one would leave that
 * connection waiting for ever, and a lost presence event is a contact shown
 * in the wrong state. When the queue is at NT_BUS_REDIS_EVENTS_MAX, or cannot
 * grow (out of memory), this waits until the loop has taken what is queued
 * (rb__drain): both arrays always hold at least RB_REG_BATCH events
 * (rb__open), so the batch then fits without allocating. Waiting holds up
 * only this thread (but with it its heartbeats and registry writes: a loop
 * that stays 65,536 events behind for longer than RB_ALIVE_TTL_MS looks
 * gone to the other nodes); the loop never waits for it. Events are
 * dropped only when the bus closes (a closed bus calls no flush back).
 */
static void rb__post(struct redis_bus *rb, const struct rb_event *evs, size_t n)
{
    if (n == 0) return;
    bool told = false;
    pthread_mutex_lock(&rb->dq_mu);
    while (rb->ev_n + n > rb->ev_cap && !rb->ev_stop) {
        if (rb->ev_n + n <= NT_BUS_REDIS_EVENTS_MAX) {
            size_t cap = rb->ev_cap;
            while (cap < rb->ev_n + n)
                cap *= 2;
            if (cap > NT_BUS_REDIS_EVENTS_MAX) cap = NT_BUS_REDIS_EVENTS_MAX;
            struct rb_event *grown = realloc(rb->ev, cap * sizeof *grown);
            if (grown) {
                rb->ev = grown;
                rb->ev_cap = cap;
                break;
            }
            if (!told)
                nt_error("bus: out of memory: %zu presence and flush events wait for the loop", n);
            told = true;
        }
        /* ev_n > 0 here (n fits an empty array), so a drain is pending. */
        rb->ev_waiting = true;
        pthread_cond_wait(&rb->ev_room, &rb->dq_mu);
    }
    if (rb->ev_stop) {
        pthread_mutex_unlock(&rb->dq_mu);
        return;
    }
    memcpy(rb->ev + rb->ev_n, evs, n * sizeof *evs);
    rb->ev_n += n;
    pthread_mutex_unlock(&rb->dq_mu);
    uv_async_send(rb->async);
}

static void rb__reg_lost(struct redis_bus *rb)
{
    atomic_store(&rb->need_sync, true);
    if (atomic_exchange(&rb->reg_ok, false))
        nt_warn("bus: redis does not answer (%s:%d)", rb->host, rb->port);
}

static int rb__op_order(const void *pa, const void *pb)
{
    const struct rb_reg_op *a = pa, *b = pb;
    if (a->user_id != b->user_id) return a->user_id < b->user_id ? -1 : 1;
    return a->seq < b->seq ? -1 : a->seq > b->seq;
}

/* Sorts the absorbed changes by user and keeps each user's first and last:
 * all rb__reg_decide needs (whether the user had connections here before
 * the first one, and has after the last one). */
static void rb__absorbed_compact(struct redis_bus *rb)
{
    struct rb_reg_op *a = rb->absorbed;
    size_t n = rb->absorbed_n, m = 0;
    if (n == 0) return;
    qsort(a, n, sizeof *a, rb__op_order);
    for (size_t i = 0; i < n;) {
        size_t j = i;
        while (j + 1 < n && a[j + 1].user_id == a[i].user_id)
            j++;
        a[m++] = a[i];
        if (j > i) a[m++] = a[j];
        i = j + 1;
    }
    rb->absorbed_n = m;
}

/* Ops taken while Redis does not answer: flush markers are answered now,
 * changes kept for rb__reg_decide. */
static void rb__absorb(struct redis_bus *rb, const struct rb_reg_op *ops, size_t n)
{
    struct rb_event evs[RB_REG_BATCH];
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        if (ops[i].delta == 0) {
            evs[m++] = (struct rb_event){
                .kind = RB_EV_FLUSH, .flush = ops[i].flush, .flush_arg = ops[i].flush_arg};
            if (m == RB_REG_BATCH) {
                rb__post(rb, evs, m);
                m = 0;
            }
            continue;
        }
        if (rb->absorbed_n == rb->absorbed_cap) {
            /* A long outage with much churn: keep two changes per user. */
            if (rb->absorbed_cap >= 65536) rb__absorbed_compact(rb);
            if (rb->absorbed_n == rb->absorbed_cap) {
                size_t cap = rb->absorbed_cap ? rb->absorbed_cap * 2 : 256;
                struct rb_reg_op *grown = realloc(rb->absorbed, cap * sizeof *grown);
                if (!grown) {
                    nt_error("bus: out of memory: a presence change is not told");
                    continue;
                }
                rb->absorbed = grown;
                rb->absorbed_cap = cap;
            }
        }
        rb->absorbed[rb->absorbed_n] = ops[i];
        rb->absorbed[rb->absorbed_n++].seq = rb->absorbed_seq++;
    }
    rb__post(rb, evs, m);
}

/*
 * After a registry rewrite worked: the transitions of the absorbed users,
 * decided with the other nodes' counts, RB_REG_BATCH users per S_OTHERS
 * call. false if Redis failed again: the users not yet decided are kept
 * for the next rewrite. Those of the batches that worked are told now and
 * removed, so a user is never told twice when Redis fails between two
 * batches (more than RB_REG_BATCH users changed during an outage); a change
 * of theirs absorbed later starts from the state told here.
 */
static bool rb__reg_decide(struct redis_bus *rb)
{
    rb__absorbed_compact(rb);
    struct rb_reg_op *a = rb->absorbed;
    size_t n = rb->absorbed_n;
    const char *argv[1 + RB_REG_BATCH];
    size_t lens[1 + RB_REG_BATCH];
    char uids[RB_REG_BATCH][24];
    bool online[RB_REG_BATCH];
    int64_t users[RB_REG_BATCH];
    struct rb_event evs[RB_REG_BATCH];
    argv[0] = rb->node;
    lens[0] = strlen(rb->node);
    size_t i = 0, decided = 0; /* a[0..decided) are told */
    while (i < n) {
        /* The next batch of users whose count here crossed zero. */
        int argc = 1;
        while (i < n && argc <= RB_REG_BATCH) {
            size_t j = i + (i + 1 < n && a[i + 1].user_id == a[i].user_id);
            bool before_zero = a[i].delta > 0 && a[i].local_edge;
            bool after_zero = a[j].delta < 0 && a[j].local_edge;
            if (before_zero != after_zero) {
                users[argc - 1] = a[i].user_id;
                online[argc - 1] = before_zero;
                argv[argc] = uids[argc - 1];
                lens[argc] =
                    (size_t)snprintf(uids[argc - 1], sizeof uids[0], "%" PRId64, a[i].user_id);
                argc++;
            }
            i = j + 1;
        }
        if (argc > 1) {
            redisReply *reply = rb__eval(rb, &rb->reg_conn, S_OTHERS, 0, argc, argv, lens);
            rb__log_error("registry", reply);
            if (!reply || reply->type != REDIS_REPLY_ARRAY || reply->elements != (size_t)argc - 1) {
                if (reply) freeReplyObject(reply);
                memmove(a, a + decided, (n - decided) * sizeof *a);
                rb->absorbed_n = n - decided;
                return false;
            }
            size_t m = 0;
            for (int k = 0; k < argc - 1; k++) {
                const redisReply *others = reply->element[k];
                if (others->type != REDIS_REPLY_INTEGER || others->integer != 0) continue;
                evs[m++] = (struct rb_event){.user_id = users[k],
                                             .kind = online[k] ? RB_EV_ONLINE : RB_EV_OFFLINE};
            }
            freeReplyObject(reply);
            rb__post(rb, evs, m);
        }
        decided = i;
    }
    rb->absorbed_n = 0;
    return true;
}

/* Sends ops[0..n) (n <= RB_REG_BATCH) to Redis in one script call and
 * posts what they turned out to be; absorbs them if Redis does not answer. */
static void rb__reg_batch(struct redis_bus *rb, const struct rb_reg_op *ops, size_t n)
{
    if (atomic_load(&rb->need_sync)) {
        rb__absorb(rb, ops, n);
        return;
    }
    const char *argv[3 + 2 * RB_REG_BATCH];
    size_t lens[3 + 2 * RB_REG_BATCH];
    char uids[RB_REG_BATCH][24];
    int argc = 3;
    argv[0] = rb->node;
    lens[0] = strlen(rb->node);
    argv[1] = rb->token_hex;
    lens[1] = strlen(rb->token_hex);
    argv[2] = rb->epoch_str;
    lens[2] = strlen(rb->epoch_str);
    for (size_t i = 0; i < n; i++) {
        if (ops[i].delta == 0) continue;
        argv[argc] = ops[i].delta > 0 ? "1" : "-1";
        lens[argc++] = ops[i].delta > 0 ? 1 : 2;
        argv[argc] = uids[i];
        lens[argc++] = (size_t)snprintf(uids[i], sizeof uids[i], "%" PRId64, ops[i].user_id);
    }
    redisReply *reply = NULL;
    if (argc > 3) {
        reply = rb__eval(rb, &rb->reg_conn, S_REG, 0, argc, argv, lens);
        rb__log_error("registry", reply);
        if (!reply || reply->type != REDIS_REPLY_ARRAY ||
            reply->elements != (size_t)(argc - 3) / 2) {
            /* Down, or our epoch is gone (Redis restarted, the node left):
             * these changes are in the next rewrite. */
            if (reply) freeReplyObject(reply);
            rb__reg_lost(rb);
            rb__absorb(rb, ops, n);
            return;
        }
    }
    struct rb_event evs[RB_REG_BATCH];
    size_t m = 0, k = 0;
    for (size_t i = 0; i < n; i++) {
        if (ops[i].delta == 0) {
            evs[m++] = (struct rb_event){
                .kind = RB_EV_FLUSH, .flush = ops[i].flush, .flush_arg = ops[i].flush_arg};
            continue;
        }
        const redisReply *total = reply->element[k++];
        long long live = total->type == REDIS_REPLY_INTEGER ? total->integer : -1;
        if (ops[i].delta > 0 ? live == 1 : live == 0)
            evs[m++] = (struct rb_event){.user_id = ops[i].user_id,
                                         .kind = ops[i].delta > 0 ? RB_EV_ONLINE : RB_EV_OFFLINE};
    }
    if (reply) freeReplyObject(reply);
    rb__post(rb, evs, m);
}

/* Registry thread: takes what the loop queued and sends it, in order. */
static void rb__reg_apply(struct redis_bus *rb)
{
    rb__rq_take(rb);

    for (size_t i = 0; i < rb->rq_work_n; i += RB_REG_BATCH) {
        size_t n = rb->rq_work_n - i < RB_REG_BATCH ? rb->rq_work_n - i : RB_REG_BATCH;
        rb__reg_batch(rb, rb->rq_work + i, n);
    }
    rb->rq_work_n = 0;
}

/* Registry thread, every RB_TICK_MS: the heartbeat, and the whole registry
 * again when Redis may not hold it. */
static void rb__reg_tick(struct redis_bus *rb)
{
    struct rb_conn *conn = &rb->reg_conn;
    bool ok = false;
    if (!atomic_load(&rb->need_sync)) {
        char ttl[16];
        const char *argv[2] = {rb->node, ttl};
        size_t lens[2] = {strlen(rb->node),
                          (size_t)snprintf(ttl, sizeof ttl, "%d", RB_ALIVE_TTL_MS)};
        redisReply *reply = rb__eval(rb, conn, S_BEAT, 0, 2, argv, lens);
        if (reply && reply->type == REDIS_REPLY_INTEGER) {
            ok = true;
            if (reply->integer == 0) {
                nt_warn("bus: this node's registry was gone from Redis; writing it again");
                atomic_store(&rb->need_sync, true);
            }
        }
        rb__log_error("heartbeat", reply);
        if (reply) freeReplyObject(reply);
        if (!ok) atomic_store(&rb->need_sync, true);
    }
    if (atomic_load(&rb->need_sync)) {
        /* Cleared first: a change that fails to queue from now on sets it
         * again and is rewritten by the next tick. */
        atomic_store(&rb->need_sync, false);
        ok = rb__sync_registry(rb, conn, true) == 0;
        /* The changes the snapshot took are in it: decided below. */
        rb__absorb(rb, rb->rq_work, rb->rq_work_n);
        rb->rq_work_n = 0;
        if (ok) ok = rb__reg_decide(rb);
        if (!ok) atomic_store(&rb->need_sync, true);
        if (ok && !atomic_load(&rb->reg_ok)) nt_info("bus: redis registry back in sync");
    }
    bool was = atomic_exchange(&rb->reg_ok, ok);
    if (was && !ok) nt_warn("bus: redis does not answer (%s:%d)", rb->host, rb->port);
}

/* Registry thread, when the bus closes: our users go offline for everyone
 * now rather than after the heartbeat TTL, and our leader locks are free. */
static void rb__reg_leave(struct redis_bus *rb)
{
    if (!atomic_load(&rb->reg_ok)) return;
    struct rb_conn *conn = &rb->reg_conn;
    const char *argv[1] = {rb->node};
    size_t lens[1] = {strlen(rb->node)};
    redisReply *reply = rb__eval(rb, conn, S_LEAVE, 0, 1, argv, lens);
    if (reply) freeReplyObject(reply);
    for (int i = 0; i < RB_MAX_LEADER_NAMES; i++) {
        char key[320];
        pthread_mutex_lock(&rb->mu);
        bool named = rb->leader_names[i][0] != '\0';
        snprintf(key, sizeof key, RB_PREFIX "leader:%s", rb->leader_names[i]);
        pthread_mutex_unlock(&rb->mu);
        if (!named) continue;
        const char *rargv[2] = {key, rb->token_hex};
        size_t rlens[2] = {strlen(key), strlen(rb->token_hex)};
        reply = rb__eval(rb, conn, S_RESIGN, 1, 2, rargv, rlens);
        if (reply) freeReplyObject(reply);
    }
}

static void rb__reg_main(void *arg)
{
    struct redis_bus *rb = arg;
    uint64_t next_tick = nt_mono_ns() + (uint64_t)RB_TICK_MS * 1000000u;
    for (;;) {
        pthread_mutex_lock(&rb->rq_mu);
        while (!rb->rq_stop && rb->rq_n == 0 && nt_mono_ns() < next_tick) {
            struct timespec ts = {.tv_sec = (time_t)(next_tick / 1000000000u),
                                  .tv_nsec = (long)(next_tick % 1000000000u)};
            pthread_cond_timedwait(&rb->rq_cond, &rb->rq_mu, &ts);
        }
        bool stop = rb->rq_stop;
        pthread_mutex_unlock(&rb->rq_mu);
        if (stop) break;
        if (nt_mono_ns() >= next_tick) {
            rb__reg_tick(rb);
            next_tick = nt_mono_ns() + (uint64_t)RB_TICK_MS * 1000000u;
        }
        rb__reg_apply(rb);
    }
    rb__reg_leave(rb);
}

/* ---- the loop's timer: reconnects of its asynchronous connections ---------------- */

/* Cheap: redisAsyncConnect does not wait (a non-blocking connect). */
static void rb__tick(uv_timer_t *timer)
{
    struct redis_bus *rb = timer->data;
    if (!rb->sub.ac) rb__async_connect(&rb->sub);
    if (!rb->pub.ac) rb__async_connect(&rb->pub);
}

/* ---- work queues ---------------------------------------------------------------- */

static void rb__queue_keys(const char *queue, char *stream, size_t stream_len, char *vis,
                           size_t vis_len)
{
    snprintf(stream, stream_len, RB_PREFIX "q:%s", queue);
    snprintf(vis, vis_len, RB_PREFIX "qv:%s", queue);
}

/* Stream ids "ms-seq" as one number: 42 bits of milliseconds (until 2109),
 * 22 bits of sequence within the millisecond. */
static uint64_t rb__job_id(const char *stream_id)
{
    char *end;
    unsigned long long ms = strtoull(stream_id, &end, 10);
    if (*end != '-') return 0;
    unsigned long long seq = strtoull(end + 1, NULL, 10);
    return ((uint64_t)ms << 22) | ((uint64_t)seq & ((1u << 22) - 1));
}

static void rb__stream_id(uint64_t job_id, char *out, size_t out_len)
{
    snprintf(out, out_len, "%" PRIu64 "-%" PRIu64, job_id >> 22, job_id & ((1u << 22) - 1));
}

static int rb__queue_push(nt_bus *b, const char *queue, const void *payload, size_t len)
{
    struct redis_bus *rb = rb__of(b);
    if (rb__is_closed(rb)) return NT_BUS_ECLOSED;
    char stream[320], vis[320];
    rb__queue_keys(queue, stream, sizeof stream, vis, sizeof vis);
    const char *argv[5] = {"XADD", stream, "*", "p", payload};
    size_t lens[5] = {4, strlen(stream), 1, 1, len};
    if (rb__on_loop(rb)) {
        /* The loop does not wait: queued on its own connection, in order. */
        if (!rb__pub_ready(rb) || redisAsyncCommandArgv(rb->pub.ac, rb__on_async_reply,
                                                        "queue push", 5, argv, lens) != REDIS_OK)
            return NT_BUS_EUNAVAILABLE;
        return 0;
    }
    struct rb_conn *conn = rb__conn(rb);
    redisReply *reply = conn ? rb__cmd(rb, conn, 5, argv, lens) : NULL;
    int rc = rb__is_error(reply) ? NT_BUS_EUNAVAILABLE : 0;
    rb__log_error("queue push", reply);
    if (reply) freeReplyObject(reply);
    return rc;
}

static int rb__queue_pop_inside(struct redis_bus *rb, const char *queue, int timeout_ms,
                                int visibility_ms, nt_bus_job *job)
{
    if (visibility_ms <= 0) visibility_ms = RB_DEFAULT_VISIBILITY_MS;
    uint64_t end = rb__deadline(timeout_ms);
    char stream[320], vis[320], consumer[96], vis_str[16];
    rb__queue_keys(queue, stream, sizeof stream, vis, sizeof vis);
    snprintf(consumer, sizeof consumer, "%s-%s", rb->node, rb->token_hex);
    snprintf(vis_str, sizeof vis_str, "%d", visibility_ms);
    struct rb_conn *conn = rb__conn(rb);
    if (!conn) return NT_BUS_ENOMEM;

    for (;;) {
        if (rb__is_closed(rb)) return NT_BUS_ECLOSED;
        const char *argv[5] = {stream, vis, RB_GROUP, consumer, vis_str};
        size_t lens[5] = {strlen(stream), strlen(vis), strlen(RB_GROUP), strlen(consumer),
                          strlen(vis_str)};
        redisReply *reply = rb__eval(rb, conn, S_TAKE, 2, 5, argv, lens);
        if (rb__is_error(reply) || reply->type != REDIS_REPLY_ARRAY || reply->elements < 2) {
            rb__log_error("queue pop", reply);
            if (reply) freeReplyObject(reply);
            if (nt_mono_ns() >= end) return NT_BUS_EUNAVAILABLE;
            if (!rb__pause(rb, end)) return NT_BUS_ECLOSED;
            continue;
        }
        redisReply *id = reply->element[0], *second = reply->element[1];
        if (id->type == REDIS_REPLY_STRING && id->len > 0 && second->type == REDIS_REPLY_STRING) {
            job->id = rb__job_id(id->str);
            job->payload = rb__strndup(second->str, second->len);
            job->len = second->len;
            freeReplyObject(reply);
            /* Not able to hold it: it comes back after the visibility
             * timeout, as if this worker had died. */
            return job->payload ? 0 : NT_BUS_ENOMEM;
        }
        uint64_t now = nt_mono_ns();
        if (now >= end) {
            freeReplyObject(reply);
            return NT_BUS_ETIMEDOUT;
        }
        /* Wait for a newer entry, or until the earliest visibility deadline
         * (a job may come back), but never longer than a slice. */
        int64_t wait_ms = RB_BLOCK_SLICE_MS;
        if (end != RB_NEVER && (int64_t)((end - now) / 1000000u) < wait_ms)
            wait_ms = (int64_t)((end - now) / 1000000u);
        if (reply->elements >= 3 && reply->element[2]->type == REDIS_REPLY_INTEGER &&
            reply->element[2]->integer >= 0 && reply->element[2]->integer < wait_ms)
            wait_ms = reply->element[2]->integer;
        if (wait_ms < 1) wait_ms = 1;
        char last_id[64], block[24];
        snprintf(last_id, sizeof last_id, "%.*s", (int)second->len, second->str);
        freeReplyObject(reply);
        snprintf(block, sizeof block, "%" PRId64, wait_ms);
        const char *xargv[8] = {"XREAD", "COUNT", "1", "BLOCK", block, "STREAMS", stream, last_id};
        size_t xlens[8] = {5, 5, 1, 5, strlen(block), 7, strlen(stream), strlen(last_id)};
        bool closed = false;
        redisReply *r = rb__cmd_blocking(rb, conn, 8, xargv, xlens, (int)wait_ms, &closed);
        if (r) freeReplyObject(r);
        if (closed) return NT_BUS_ECLOSED;
        if (!r && !rb__pause(rb, end)) return NT_BUS_ECLOSED;
    }
}

static int rb__queue_pop(nt_bus *b, const char *queue, int timeout_ms, int visibility_ms,
                         nt_bus_job *job)
{
    struct redis_bus *rb = rb__of(b);
    if (!rb__enter(rb)) return NT_BUS_ECLOSED;
    int rc = rb__queue_pop_inside(rb, queue, timeout_ms, visibility_ms, job);
    rb__leave(rb);
    return rc;
}

static int rb__queue_ack(nt_bus *b, const char *queue, uint64_t job_id)
{
    struct redis_bus *rb = rb__of(b);
    char stream[320], vis[320], id[48];
    rb__queue_keys(queue, stream, sizeof stream, vis, sizeof vis);
    rb__stream_id(job_id, id, sizeof id);
    const char *argv[4] = {stream, vis, RB_GROUP, id};
    size_t lens[4] = {strlen(stream), strlen(vis), strlen(RB_GROUP), strlen(id)};
    struct rb_conn *conn = rb__conn(rb);
    redisReply *reply = conn ? rb__eval(rb, conn, S_ACK, 2, 4, argv, lens) : NULL;
    int rc = NT_BUS_EUNAVAILABLE;
    if (reply && reply->type == REDIS_REPLY_INTEGER) rc = reply->integer > 0 ? 0 : -ENOENT;
    rb__log_error("queue ack", reply);
    if (reply) freeReplyObject(reply);
    return rc;
}

static size_t rb__queue_depth(nt_bus *b, const char *queue)
{
    struct redis_bus *rb = rb__of(b);
    char stream[320], vis[320];
    rb__queue_keys(queue, stream, sizeof stream, vis, sizeof vis);
    const char *argv[2] = {"XLEN", stream};
    size_t lens[2] = {4, strlen(stream)};
    struct rb_conn *conn = rb__conn(rb);
    redisReply *reply = conn ? rb__cmd(rb, conn, 2, argv, lens) : NULL;
    size_t depth = 0;
    if (reply && reply->type == REDIS_REPLY_INTEGER && reply->integer > 0)
        depth = (size_t)reply->integer;
    if (reply) freeReplyObject(reply);
    return depth;
}

/* ---- request / reply -------------------------------------------------------------- */

/* A call on the service list is "<correlation id>\n<payload>". */
static int rb__request_inside(struct redis_bus *rb, const char *service, const void *payload,
                              size_t len, int timeout_ms, char **reply_out, size_t *reply_len)
{
    struct rb_conn *conn = rb__conn(rb);
    if (!conn) return NT_BUS_ENOMEM;
    uint64_t end = rb__deadline(timeout_ms);
    char corr[40], svc[320], wait_key[96], reply_key[96], ttl[24];
    snprintf(corr, sizeof corr, "%s-%" PRIu64, rb->token_hex,
             (uint64_t)atomic_fetch_add(&rb->next_call, 1) + 1);
    snprintf(svc, sizeof svc, RB_PREFIX "svc:%s", service);
    snprintf(wait_key, sizeof wait_key, RB_PREFIX "w:%s", corr);
    snprintf(reply_key, sizeof reply_key, RB_PREFIX "r:%s", corr);
    /* The wait key outlives a caller that died without cleaning up only by
     * a little; timeout < 0 waits "forever", which is a day here. */
    snprintf(ttl, sizeof ttl, "%lld",
             timeout_ms < 0 ? 86400000LL : (long long)timeout_ms + RB_CMD_TIMEOUT_MS);
    size_t corr_len = strlen(corr);
    char *call = malloc(corr_len + 1 + len);
    if (!call) return NT_BUS_ENOMEM;
    memcpy(call, corr, corr_len);
    call[corr_len] = '\n';
    if (len) memcpy(call + corr_len + 1, payload, len);
    size_t call_len = corr_len + 1 + len;

    const char *argv[4] = {svc, wait_key, call, ttl};
    size_t lens[4] = {strlen(svc), strlen(wait_key), call_len, strlen(ttl)};
    redisReply *reply = rb__eval(rb, conn, S_CALL, 2, 4, argv, lens);
    int rc = rb__is_error(reply) ? NT_BUS_EUNAVAILABLE : 0;
    rb__log_error("request", reply);
    if (reply) freeReplyObject(reply);
    if (rc) {
        free(call);
        return rc;
    }

    rc = NT_BUS_ETIMEDOUT;
    for (;;) {
        uint64_t now = nt_mono_ns();
        int64_t wait_ms = RB_BLOCK_SLICE_MS;
        if (end != RB_NEVER) {
            if (now >= end) break;
            if ((int64_t)((end - now) / 1000000u) < wait_ms)
                wait_ms = (int64_t)((end - now) / 1000000u);
        }
        if (wait_ms < 1) wait_ms = 1;
        char block[32];
        snprintf(block, sizeof block, "%.3f", (double)wait_ms / 1000.0);
        const char *bargv[3] = {"BLPOP", reply_key, block};
        size_t blens[3] = {5, strlen(reply_key), strlen(block)};
        bool closed = false;
        redisReply *r = rb__cmd_blocking(rb, conn, 3, bargv, blens, (int)wait_ms, &closed);
        if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
            r->element[1]->type == REDIS_REPLY_STRING) {
            *reply_out = rb__strndup(r->element[1]->str, r->element[1]->len);
            if (reply_len) *reply_len = r->element[1]->len;
            rc = *reply_out ? 0 : NT_BUS_ENOMEM;
            freeReplyObject(r);
            if (rc == NT_BUS_ENOMEM && reply_len) *reply_len = 0;
            break;
        }
        if (r) freeReplyObject(r);
        if (closed) {
            rc = NT_BUS_ECLOSED;
            break;
        }
        if (!r) { /* Redis went away while we waited */
            rc = NT_BUS_EUNAVAILABLE;
            break;
        }
    }
    /* Done waiting either way: nobody may store a reply any more, and a call
     * no server took is withdrawn. */
    const char *cargv[4] = {svc, wait_key, reply_key, call};
    size_t clens[4] = {strlen(svc), strlen(wait_key), strlen(reply_key), call_len};
    reply = rb__eval(rb, conn, S_CANCEL, 3, 4, cargv, clens);
    if (reply) freeReplyObject(reply);
    free(call);
    return rc;
}

static int rb__request(nt_bus *b, const char *service, const void *payload, size_t len,
                       int timeout_ms, char **reply_out, size_t *reply_len)
{
    struct redis_bus *rb = rb__of(b);
    if (!rb__enter(rb)) return NT_BUS_ECLOSED;
    int rc = rb__request_inside(rb, service, payload, len, timeout_ms, reply_out, reply_len);
    rb__leave(rb);
    return rc;
}

static int rb__serve_inside(struct redis_bus *rb, const char *service, int timeout_ms,
                            nt_bus_call *call)
{
    struct rb_conn *conn = rb__conn(rb);
    if (!conn) return NT_BUS_ENOMEM;
    uint64_t end = rb__deadline(timeout_ms);
    char svc[320];
    snprintf(svc, sizeof svc, RB_PREFIX "svc:%s", service);
    for (;;) {
        if (rb__is_closed(rb)) return NT_BUS_ECLOSED;
        uint64_t now = nt_mono_ns();
        int64_t wait_ms = RB_BLOCK_SLICE_MS;
        if (end != RB_NEVER) {
            int64_t left_ms = now >= end ? 0 : (int64_t)((end - now) / 1000000u);
            if (left_ms < wait_ms) wait_ms = left_ms;
        }
        redisReply *r;
        bool closed = false;
        if (wait_ms == 0) {
            const char *argv[2] = {"RPOP", svc};
            size_t lens[2] = {4, strlen(svc)};
            r = rb__cmd(rb, conn, 2, argv, lens);
        } else {
            char block[32];
            snprintf(block, sizeof block, "%.3f", (double)wait_ms / 1000.0);
            const char *argv[3] = {"BRPOP", svc, block};
            size_t lens[3] = {5, strlen(svc), strlen(block)};
            r = rb__cmd_blocking(rb, conn, 3, argv, lens, (int)wait_ms, &closed);
        }
        if (closed) {
            if (r) freeReplyObject(r);
            return NT_BUS_ECLOSED;
        }
        if (rb__is_error(r)) {
            rb__log_error("serve", r);
            if (r) freeReplyObject(r);
            if (nt_mono_ns() >= end) return NT_BUS_EUNAVAILABLE;
            if (!rb__pause(rb, end)) return NT_BUS_ECLOSED;
            continue;
        }
        const redisReply *msg = NULL;
        if (r->type == REDIS_REPLY_ARRAY && r->elements == 2)
            msg = r->element[1];
        else if (r->type == REDIS_REPLY_STRING)
            msg = r;
        const char *nl =
            msg && msg->type == REDIS_REPLY_STRING ? memchr(msg->str, '\n', msg->len) : NULL;
        size_t corr_len = nl ? (size_t)(nl - msg->str) : 0;
        if (!nl || corr_len == 0 || corr_len >= sizeof call->correlation_id) {
            bool nothing = !msg;
            freeReplyObject(r);
            if (nothing && nt_mono_ns() >= end) return NT_BUS_ETIMEDOUT;
            continue;
        }
        memcpy(call->correlation_id, msg->str, corr_len);
        call->correlation_id[corr_len] = '\0';
        snprintf(call->reply_to, sizeof call->reply_to, RB_PREFIX "r:%s", call->correlation_id);
        size_t payload_len = msg->len - corr_len - 1;
        call->payload = rb__strndup(nl + 1, payload_len);
        call->len = payload_len;
        freeReplyObject(r);
        if (!call->payload) return NT_BUS_ENOMEM;

        /* A caller that already gave up does not want it. */
        char wait_key[96];
        snprintf(wait_key, sizeof wait_key, RB_PREFIX "w:%s", call->correlation_id);
        const char *eargv[2] = {"EXISTS", wait_key};
        size_t elens[2] = {6, strlen(wait_key)};
        redisReply *e = rb__cmd(rb, conn, 2, eargv, elens);
        bool waiting = !e || e->type != REDIS_REPLY_INTEGER || e->integer == 1;
        if (e) freeReplyObject(e);
        if (waiting) return 0;
        nt_bus_call_free(call);
        memset(call, 0, sizeof *call);
    }
}

static int rb__serve(nt_bus *b, const char *service, int timeout_ms, nt_bus_call *call)
{
    struct redis_bus *rb = rb__of(b);
    if (!rb__enter(rb)) return NT_BUS_ECLOSED;
    int rc = rb__serve_inside(rb, service, timeout_ms, call);
    rb__leave(rb);
    return rc;
}

static int rb__reply(nt_bus *b, const nt_bus_call *call, const void *payload, size_t len)
{
    struct redis_bus *rb = rb__of(b);
    if (rb__is_closed(rb)) return NT_BUS_ECLOSED;
    struct rb_conn *conn = rb__conn(rb);
    if (!conn) return NT_BUS_ENOMEM;
    char wait_key[96], ttl[16];
    snprintf(wait_key, sizeof wait_key, RB_PREFIX "w:%s", call->correlation_id);
    snprintf(ttl, sizeof ttl, "%d", RB_REPLY_TTL_MS);
    const char *argv[4] = {wait_key, call->reply_to, payload ? payload : "", ttl};
    size_t lens[4] = {strlen(wait_key), strlen(call->reply_to), len, strlen(ttl)};
    redisReply *reply = rb__eval(rb, conn, S_REPLY, 2, 4, argv, lens);
    int rc = rb__is_error(reply) ? NT_BUS_EUNAVAILABLE : 0;
    rb__log_error("reply", reply);
    if (reply) freeReplyObject(reply);
    return rc;
}

/* ---- leader lock ----------------------------------------------------------------- */

static void rb__remember_leader(struct redis_bus *rb, const char *name)
{
    pthread_mutex_lock(&rb->mu);
    int free_slot = -1;
    for (int i = 0; i < RB_MAX_LEADER_NAMES; i++) {
        if (strcmp(rb->leader_names[i], name) == 0) {
            free_slot = -2;
            break;
        }
        if (free_slot == -1 && !rb->leader_names[i][0]) free_slot = i;
    }
    if (free_slot >= 0)
        snprintf(rb->leader_names[free_slot], sizeof rb->leader_names[free_slot], "%s", name);
    pthread_mutex_unlock(&rb->mu);
}

static bool rb__leader(nt_bus *b, const char *name, int ttl_ms)
{
    struct redis_bus *rb = rb__of(b);
    if (ttl_ms < 1) ttl_ms = 1;
    struct rb_conn *conn = rb__conn(rb);
    if (!conn) return false;
    char key[320], ttl[16];
    snprintf(key, sizeof key, RB_PREFIX "leader:%s", name);
    snprintf(ttl, sizeof ttl, "%d", ttl_ms);
    const char *argv[3] = {key, rb->token_hex, ttl};
    size_t lens[3] = {strlen(key), strlen(rb->token_hex), strlen(ttl)};
    redisReply *reply = rb__eval(rb, conn, S_LEADER, 1, 3, argv, lens);
    /* Redis down: nobody can know who leads, so nobody does. */
    bool held = reply && reply->type == REDIS_REPLY_INTEGER && reply->integer == 1;
    rb__log_error("leader", reply);
    if (reply) freeReplyObject(reply);
    if (held) rb__remember_leader(rb, name);
    return held;
}

/* ---- shared match queue ---------------------------------------------------------- */

/* A string (or integer) element of a reply as text; NULL if neither. */
static const char *rb__elem_str(const redisReply *e, char tmp[24])
{
    if (e->type == REDIS_REPLY_STRING) return e->str;
    if (e->type == REDIS_REPLY_INTEGER) {
        snprintf(tmp, 24, "%lld", e->integer);
        return tmp;
    }
    return NULL;
}

/* The partner's entry from the script's {2, user, g, a, genders, lo, hi,
 * interests, node, arrival}. False if the reply is not that shape. */
static bool rb__match_partner(const redisReply *reply, nt_bus_match_entry *partner)
{
    char tmp[10][24];
    const char *f[10];
    memset(partner, 0, sizeof *partner);
    if (reply->elements != 10) return false;
    for (size_t i = 1; i < 10; i++)
        if (!(f[i] = rb__elem_str(reply->element[i], tmp[i]))) return false;
    partner->user_id = strtoll(f[1], NULL, 10);
    partner->gender = (unsigned)strtoul(f[2], NULL, 10);
    partner->age = (int)strtol(f[3], NULL, 10);
    partner->genders = (unsigned)strtoul(f[4], NULL, 10);
    partner->age_min = (int)strtol(f[5], NULL, 10);
    partner->age_max = (int)strtol(f[6], NULL, 10);
    for (const char *p = f[7]; *p && partner->ninterests < NT_BUS_MATCH_INTERESTS_MAX;) {
        char *end;
        partner->interest_buf[partner->ninterests++] = strtoull(p, &end, 16);
        if (end == p) return false;
        p = *end == ',' ? end + 1 : end;
    }
    partner->interests = partner->interest_buf;
    snprintf(partner->node, sizeof partner->node, "%s", f[8]);
    partner->arrival = strtoull(f[9], NULL, 10);
    return partner->user_id > 0 && partner->arrival > 0;
}

static int rb__match_join(nt_bus *b, const nt_bus_match_entry *me, int scan_cap,
                          nt_bus_match_entry *partner)
{
    struct redis_bus *rb = rb__of(b);
    if (rb__is_closed(rb)) return NT_BUS_ECLOSED;
    if (me->nblocks < 0 || scan_cap < 0 || me->ninterests < 0 ||
        me->ninterests > NT_BUS_MATCH_INTERESTS_MAX)
        return -EINVAL;
    /* user, gender, age, genders, age_min, age_max, cap, node, arrival,
     * ninterests, interests (hex), blocks */
    int node_at = 7, arrival_at = 8, count_at = 9, first_block = 10 + me->ninterests;
    int argc = first_block + me->nblocks;
    char(*nums)[24] = calloc((size_t)argc, sizeof *nums);
    const char **argv = calloc((size_t)argc, sizeof *argv);
    size_t *lens = calloc((size_t)argc, sizeof *lens);
    int rc = NT_BUS_ENOMEM;
    if (!nums || !argv || !lens) goto out;
    int64_t head[7] = {me->user_id, me->gender,  me->age, me->genders,
                       me->age_min, me->age_max, scan_cap};
    for (int i = 0; i < argc; i++) {
        if (i == node_at) {
            /* A partner put back keeps the node it waits from: its
             * liveness, not ours, says whether it still waits. */
            argv[i] = me->node[0] ? me->node : rb->node;
            lens[i] = strlen(argv[i]);
            continue;
        }
        if (i == arrival_at) {
            lens[i] = (size_t)snprintf(nums[i], sizeof nums[i], "%" PRIu64, me->arrival);
        } else if (i > count_at && i < first_block) {
            lens[i] = (size_t)snprintf(nums[i], sizeof nums[i], "%" PRIx64,
                                       me->interests[i - count_at - 1]);
        } else {
            int64_t v = i < 7           ? head[i]
                        : i == count_at ? me->ninterests
                                        : me->blocks[i - first_block];
            lens[i] = (size_t)snprintf(nums[i], sizeof nums[i], "%" PRId64, v);
        }
        argv[i] = nums[i];
    }
    rc = NT_BUS_EUNAVAILABLE;
    struct rb_conn *conn = rb__conn(rb);
    redisReply *reply = conn ? rb__eval(rb, conn, S_MQ_JOIN, 0, argc, argv, lens) : NULL;
    rb__log_error("match join", reply);
    if (reply && reply->type == REDIS_REPLY_ARRAY && reply->elements >= 1 &&
        reply->element[0]->type == REDIS_REPLY_INTEGER) {
        rc = (int)reply->element[0]->integer;
        if (rc == NT_BUS_MATCH_PAIRED && !rb__match_partner(reply, partner))
            rc = NT_BUS_EUNAVAILABLE;
    }
    if (reply) freeReplyObject(reply);
out:
    free(nums);
    free(argv);
    free(lens);
    return rc;
}

static int rb__match_leave(nt_bus *b, int64_t user_id)
{
    struct redis_bus *rb = rb__of(b);
    if (rb__is_closed(rb)) return NT_BUS_ECLOSED;
    char uid[24];
    const char *argv[1] = {uid};
    size_t lens[1] = {(size_t)snprintf(uid, sizeof uid, "%" PRId64, user_id)};
    struct rb_conn *conn = rb__conn(rb);
    redisReply *reply = conn ? rb__eval(rb, conn, S_MQ_LEAVE, 0, 1, argv, lens) : NULL;
    int rc = NT_BUS_EUNAVAILABLE;
    if (reply && reply->type == REDIS_REPLY_INTEGER) rc = reply->integer == 1;
    rb__log_error("match leave", reply);
    if (reply) freeReplyObject(reply);
    return rc;
}

/* ---- open / close / ping ----------------------------------------------------------- */

static int rb__parse_url(struct redis_bus *rb, const char *url, char *err, size_t err_len)
{
    const char *p = url + strlen("redis://");
    const char *query = strchr(p, '?');
    size_t hostport_len = query ? (size_t)(query - p) : strlen(p);
    while (hostport_len > 0 && p[hostport_len - 1] == '/')
        hostport_len--;
    const char *colon = memchr(p, ':', hostport_len);
    size_t host_len = colon ? (size_t)(colon - p) : hostport_len;
    if (host_len == 0 || host_len >= sizeof rb->host) {
        snprintf(err, err_len, "bus: '%s' is not redis://HOST:PORT[?node=NAME]", url);
        return -1;
    }
    memcpy(rb->host, p, host_len);
    rb->host[host_len] = '\0';
    rb->port = 6379;
    if (colon) {
        char port[8] = "";
        size_t port_len = hostport_len - host_len - 1;
        if (port_len == 0 || port_len >= sizeof port) {
            snprintf(err, err_len, "bus: bad port in '%s'", url);
            return -1;
        }
        memcpy(port, colon + 1, port_len);
        char *end;
        long v = strtol(port, &end, 10);
        if (*end || v < 1 || v > 65535) {
            snprintf(err, err_len, "bus: bad port in '%s'", url);
            return -1;
        }
        rb->port = (int)v;
    }
    if (query && strncmp(query, "?node=", 6) == 0) {
        const char *name = query + 6;
        size_t name_len = strlen(name);
        if (name_len == 0 || name_len >= sizeof rb->node - 1 || strpbrk(name, " \n\r,&")) {
            snprintf(err, err_len, "bus: bad node name in '%s'", url);
            return -1;
        }
        memcpy(rb->node, name, name_len + 1);
    } else if (query) {
        snprintf(err, err_len, "bus: unknown option in '%s' (known: ?node=NAME)", url);
        return -1;
    }
    return 0;
}

static uint64_t rb__random_token(void)
{
    uint64_t token = 0;
    if (getrandom(&token, sizeof token, GRND_NONBLOCK) != (ssize_t)sizeof token)
        token = nt_mono_ns() ^ ((uint64_t)getpid() << 32);
    return token ? token : 1;
}

static int rb__script_shas(struct redis_bus *rb)
{
    for (int s = 0; s < S_COUNT; s++) {
        unsigned char md[EVP_MAX_MD_SIZE];
        unsigned int md_len = 0;
        if (!EVP_Digest(rb_scripts[s], strlen(rb_scripts[s]), md, &md_len, EVP_sha1(), NULL) ||
            md_len != 20)
            return -1;
        for (unsigned i = 0; i < 20; i++)
            sprintf(rb->sha[s] + 2 * i, "%02x", md[i]);
    }
    return 0;
}

static void rb__handle_closed(uv_handle_t *handle)
{
    free(handle);
}

static void rb__free(struct redis_bus *rb)
{
    for (struct rb_conn *c = rb->conns; c;) {
        struct rb_conn *next = c->next;
        if (c->ctx) redisFree(c->ctx);
        free(c);
        c = next;
    }
    if (rb->reg_conn.ctx) redisFree(rb->reg_conn.ctx);
    nt_inbox_free_chain(nt_inbox_take(&rb->dq));
    free(rb->rq);
    free(rb->rq_work);
    free(rb->absorbed);
    free(rb->ev);
    free(rb->ev_loop);
    nt_conn_counts_free(&rb->reg);
    pthread_cond_destroy(&rb->rq_cond);
    pthread_mutex_destroy(&rb->rq_mu);
    pthread_cond_destroy(&rb->ev_room);
    pthread_mutex_destroy(&rb->dq_mu);
    pthread_rwlock_destroy(&rb->reg_lock);
    pthread_cond_destroy(&rb->wake);
    pthread_cond_destroy(&rb->idle);
    pthread_mutex_destroy(&rb->mu);
    free(rb);
}

static nt_bus *rb__open(const char *url, uv_loop_t *loop, char *err, size_t err_len)
{
    if (strncmp(url, "redis://", 8) != 0) {
        snprintf(err, err_len, "bus: '%s' is not redis://HOST:PORT", url);
        return NULL;
    }
    struct redis_bus *rb = calloc(1, sizeof *rb);
    if (!rb) {
        snprintf(err, err_len, "bus: out of memory");
        return NULL;
    }
    rb->base.ops = &nt_bus_redis_ops;
    rb->base.loop = loop;
    rb->loop_thread = uv_thread_self();
    rb->token = rb__random_token();
    snprintf(rb->token_hex, sizeof rb->token_hex, "%016" PRIx64, rb->token);
    if (rb__parse_url(rb, url, err, err_len) != 0) {
        free(rb);
        return NULL;
    }
    if (!rb->node[0]) {
        char host[40] = "node";
        gethostname(host, sizeof host - 1);
        host[sizeof host - 1] = '\0';
        snprintf(rb->node, sizeof rb->node, "%.30s-%d-%.6s", host, (int)getpid(), rb->token_hex);
    }
    snprintf(rb->channel, sizeof rb->channel, RB_PREFIX "deliver:%s", rb->node);
    rb->sub.rb = rb->pub.rb = rb;
    rb->sub.is_subscriber = true;

    /* Each step either succeeds or leaves rb for rb__free (which copes with
     * zeroed members). */
    pthread_mutex_init(&rb->mu, NULL);
    rb__cond_init(&rb->idle);
    rb__cond_init(&rb->wake);
    pthread_rwlock_init(&rb->reg_lock, NULL);
    pthread_mutex_init(&rb->rq_mu, NULL);
    rb__cond_init(&rb->rq_cond);
    pthread_mutex_init(&rb->dq_mu, NULL);
    rb->dq.max_bytes = RB_DELIVERY_QUEUE_MAX;
    rb__cond_init(&rb->ev_room);
    rb->reg_conn.rb = rb;
    rb->reg_conn.registry = true;
    /* Room for one batch of events in both arrays, so that rb__post can
     * always wait for the loop instead of allocating. */
    rb->ev = malloc(RB_REG_BATCH * sizeof *rb->ev);
    rb->ev_loop = malloc(RB_REG_BATCH * sizeof *rb->ev_loop);
    rb->ev_cap = rb->ev_loop_cap = RB_REG_BATCH;
    if (!rb->ev || !rb->ev_loop || nt_conn_counts_init(&rb->reg) != 0 || rb__script_shas(rb) != 0) {
        snprintf(err, err_len, "bus: out of memory");
        goto fail;
    }
    if (pthread_key_create(&rb->tls, rb__conn_release) != 0) {
        snprintf(err, err_len, "bus: no thread-specific key left");
        goto fail;
    }

    /* Reachable at start, or natterd does not start: a node that comes up
     * without its bus would look healthy and drop everything. Later
     * outages are survived. A node name reused after a crash starts from an
     * empty registry (S_SYNC with nothing). */
    if (!rb__ctx(rb, &rb->reg_conn)) {
        snprintf(err, err_len, "bus: cannot reach Redis at %s:%d", rb->host, rb->port);
        goto fail_key;
    }
    if (rb__sync_registry(rb, &rb->reg_conn, false) != 0) {
        snprintf(err, err_len, "bus: Redis at %s:%d does not run our scripts (needs 7.0)", rb->host,
                 rb->port);
        goto fail_key;
    }
    atomic_store(&rb->reg_ok, true);

    rb->async = malloc(sizeof *rb->async);
    if (!rb->async || uv_async_init(loop, rb->async, rb__drain) != 0) {
        free(rb->async);
        rb->async = NULL;
        snprintf(err, err_len, "bus: cannot set up the loop wake-up");
        goto fail_key;
    }
    rb->async->data = rb;
    uv_unref((uv_handle_t *)rb->async);
    rb->tick = malloc(sizeof *rb->tick);
    if (!rb->tick || uv_timer_init(loop, rb->tick) != 0) {
        free(rb->tick);
        rb->tick = NULL;
        rb->async->data = NULL;
        uv_close((uv_handle_t *)rb->async, rb__handle_closed);
        snprintf(err, err_len, "bus: cannot set up the heartbeat timer");
        goto fail_key;
    }
    rb->tick->data = rb;
    uv_unref((uv_handle_t *)rb->tick);
    if (uv_thread_create(&rb->reg_thread, rb__reg_main, rb) != 0) {
        uv_close((uv_handle_t *)rb->tick, rb__handle_closed);
        rb->async->data = NULL;
        uv_close((uv_handle_t *)rb->async, rb__handle_closed);
        snprintf(err, err_len, "bus: cannot start the registry thread");
        goto fail_key;
    }
    rb->reg_started = true;
    uv_timer_start(rb->tick, rb__tick, RB_TICK_MS, RB_TICK_MS);
    rb__async_connect(&rb->sub);
    rb__async_connect(&rb->pub);
    nt_info("bus: redis %s:%d node=%s", rb->host, rb->port, rb->node);
    return &rb->base;

fail_key:
    pthread_setspecific(rb->tls, NULL);
    pthread_key_delete(rb->tls);
fail:
    rb__free(rb);
    return NULL;
}

/* Drops an asynchronous connection at close (loop thread). Commands still
 * unsent are lost: their callbacks run with no reply. */
static void rb__async_free(struct rb_async *a)
{
    if (!a->ac) return;
    redisAsyncContext *ac = a->ac;
    atomic_store(&a->connected, false);
    redisAsyncFree(ac); /* calls pending callbacks with NULL; cleanup closes the poll */
    a->ac = NULL;
}

static void rb__close(nt_bus *b)
{
    struct redis_bus *rb = rb__of(b);

    pthread_mutex_lock(&rb->mu);
    rb->closed = true;
    for (struct rb_conn *c = rb->conns; c; c = c->next) {
        if (c->blocked && c->ctx) shutdown(c->ctx->fd, SHUT_RDWR);
    }
    pthread_cond_broadcast(&rb->wake);
    while (rb->inside > 0)
        pthread_cond_wait(&rb->idle, &rb->mu);
    pthread_mutex_unlock(&rb->mu);

    /* The registry thread leaves Redis cleanly (rb__reg_leave) and ends;
     * changes and events still queued are dropped. */
    pthread_mutex_lock(&rb->rq_mu);
    rb->rq_stop = true;
    pthread_cond_signal(&rb->rq_cond);
    pthread_mutex_unlock(&rb->rq_mu);
    pthread_mutex_lock(&rb->dq_mu);
    rb->ev_stop = true; /* the loop drains no more: rb__post must not wait */
    pthread_cond_signal(&rb->ev_room);
    pthread_mutex_unlock(&rb->dq_mu);
    if (rb->reg_started) uv_thread_join(&rb->reg_thread);

    uv_timer_stop(rb->tick);
    uv_close((uv_handle_t *)rb->tick, rb__handle_closed);
    rb->async->data = NULL;
    uv_close((uv_handle_t *)rb->async, rb__handle_closed);
    rb__async_free(&rb->sub);
    rb__async_free(&rb->pub);

    /* No destructor may run for this key any more: the connections are
     * freed here, whoever borrowed them. */
    pthread_setspecific(rb->tls, NULL);
    pthread_key_delete(rb->tls);
    rb__free(rb);
}

static int rb__ping(nt_bus *b)
{
    struct redis_bus *rb = rb__of(b);
    if (rb__is_closed(rb)) return NT_BUS_EUNAVAILABLE;
    /* Without its subscriber a node would miss its deliveries. */
    if (!atomic_load(&rb->sub.connected) || !atomic_load(&rb->pub.connected))
        return NT_BUS_EUNAVAILABLE;
    /* Nor while its registry is not (yet again) in Redis. */
    if (!atomic_load(&rb->reg_ok)) return NT_BUS_EUNAVAILABLE;
    if (rb__on_loop(rb)) return 0;
    struct rb_conn *conn = rb__conn(rb);
    const char *argv[1] = {"PING"};
    size_t lens[1] = {4};
    redisReply *reply = conn ? rb__cmd(rb, conn, 1, argv, lens) : NULL;
    int rc = rb__is_error(reply) ? NT_BUS_EUNAVAILABLE : 0;
    if (reply) freeReplyObject(reply);
    return rc;
}

const nt_bus_ops nt_bus_redis_ops = {
    .name = "redis",
    .open = rb__open,
    .close = rb__close,
    .ping = rb__ping,
    .deliver = rb__deliver,
    .conn_up = rb__conn_up,
    .conn_down = rb__conn_down,
    .registry_flush = rb__registry_flush,
    .online = rb__online,
    .queue_push = rb__queue_push,
    .queue_pop = rb__queue_pop,
    .queue_ack = rb__queue_ack,
    .queue_depth = rb__queue_depth,
    .request = rb__request,
    .serve = rb__serve,
    .reply = rb__reply,
    .leader = rb__leader,
    .match_join = rb__match_join,
    .match_leave = rb__match_leave,
};
