/*
 * The SQLite store's durability across a crash: a child process opens the
 * store, writes, and dies without closing it (_exit, or SIGKILL from the
 * parent in the middle of a stream of appends); the parent reopens the
 * same files and finds every append that was acknowledged, once, with the
 * seq and id it was acknowledged with, and the chat's counters ahead of
 * them. An acknowledgement must mean "on disk": the child dies right
 * after its acks, after a pause, and in the middle of a stream.
 */
#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "store/store.h"
#include "unit/check.h"

#define ACKS_MAX 100000

static char db_path[512];
static char db_url[600];

/* What the child tells the parent, in a shared file: one line per
 * acknowledged append "seq id", written after the ack. */
static char acks_path[600];

static nt_store *open_store(void)
{
    char err[256];
    nt_store *s = nt_store_open(db_url, err, sizeof(err));
    if (!s) fprintf(stderr, "nt_store_open(%s): %s\n", db_url, err);
    return s;
}

static void cleanup_files(void)
{
    const char *suffix[] = {"", "-wal", "-shm"};
    char name[700];
    for (size_t i = 0; i < sizeof(suffix) / sizeof(suffix[0]); i++) {
        snprintf(name, sizeof(name), "%s%s", db_path, suffix[i]);
        unlink(name);
    }
    unlink(acks_path);
}

static int64_t setup_chat(nt_store *s, const char *nick, int64_t *user)
{
    char email[64];
    snprintf(email, sizeof(email), "%s@example.org", nick);
    nt_user_new in = {
        .email = email, .nickname = nick, .password_hash = "$argon2id$x", .created_at = 1000};
    nt_user u;
    const char *field = NULL;
    if (nt_store_user_create(s, &in, &u, &field) != 0) return 0;
    nt_chat c;
    if (nt_store_chat_create(s, "group", "crash", u.id, NULL, 0, 1000, &c) != 0) return 0;
    *user = u.id;
    int64_t id = c.id;
    nt_chat_free(&c);
    return id;
}

/*
 * The child: appends `count` messages (client ids m1, m2, ...), one at a
 * time, writing each ack to the acks file, pausing `pause_ms` after
 * `pause_after` of them (so a commit of the open transaction happens in the
 * middle), then dies without closing the store. count < 0: forever (the
 * parent kills it).
 */
static void child(int64_t chat_id, int64_t user, int count, int pause_after, int pause_ms)
{
    nt_store *s = open_store();
    if (!s) _exit(2);
    FILE *acks = fopen(acks_path, "w");
    if (!acks) _exit(3);
    for (int i = 1; count < 0 || i <= count; i++) {
        nt_append op;
        memset(&op, 0, sizeof(op));
        char text[64];
        snprintf(text, sizeof(text), "message %d", i);
        op.chat_id = chat_id;
        op.sender_id = user;
        op.text = text;
        op.text_len = strlen(text);
        op.ts = 2000 + i;
        snprintf(op.client_id, sizeof(op.client_id), "m%d", i);
        if (nt_store_append_wait(s, &op) != 0) _exit(4);
        fprintf(acks, "%lld %lld\n", (long long)op.msg.seq, (long long)op.msg.id);
        fflush(acks);
        nt_append_release(&op);
        if (i == pause_after) usleep((useconds_t)pause_ms * 1000);
    }
    _exit(0); /* no nt_store_close: nothing is committed or cleaned up */
}

/* Reopens the store and checks every acknowledged append is there once. */
static void check_after_crash(int64_t chat_id, int64_t user, const char *what)
{
    static long long seqs[ACKS_MAX], ids[ACKS_MAX];
    int nacks = 0;
    FILE *acks = fopen(acks_path, "r");
    CHECK(acks != NULL);
    while (acks && nacks < ACKS_MAX && fscanf(acks, "%lld %lld", &seqs[nacks], &ids[nacks]) == 2)
        nacks++;
    if (acks) fclose(acks);
    fprintf(stderr, "%s: %d acknowledged appends before the crash\n", what, nacks);
    CHECK(nacks > 0);

    nt_store *s = open_store();
    CHECK(s != NULL);
    if (!s) return;
    nt_message *msgs = NULL;
    int n = 0;
    CHECK_EQ_INT(nt_store_messages(s, chat_id, 0, 0, ACKS_MAX, &msgs, &n), 0);
    /* Every ack is there with its seq and id; seqs are 1..n without a gap
     * (an append whose ack was lost in the crash may be there too). */
    CHECK(n >= nacks);
    for (int i = 0; i < nacks && i < n; i++) {
        CHECK_EQ_INT(msgs[i].seq, seqs[i]);
        CHECK_EQ_INT(msgs[i].id, ids[i]);
        char want[64];
        snprintf(want, sizeof(want), "message %d", i + 1);
        CHECK_STR_EQ(msgs[i].text, want);
    }
    for (int i = 0; i < n; i++)
        CHECK_EQ_INT(msgs[i].seq, i + 1);
    nt_messages_free(msgs, n);

    /* The counters came back too: the next append follows, and a retry of
     * an acknowledged one is a duplicate of it. */
    nt_append op;
    memset(&op, 0, sizeof(op));
    op.chat_id = chat_id;
    op.sender_id = user;
    op.text = "after";
    op.text_len = 5;
    op.ts = 9000;
    snprintf(op.client_id, sizeof(op.client_id), "after-%s", what);
    CHECK_EQ_INT(nt_store_append_wait(s, &op), 0);
    CHECK_EQ_INT(op.msg.seq, n + 1);
    nt_append_release(&op);
    memset(&op, 0, sizeof(op));
    op.chat_id = chat_id;
    op.sender_id = user;
    op.text = "message 1";
    op.text_len = 9;
    op.ts = 9001;
    snprintf(op.client_id, sizeof(op.client_id), "m1");
    CHECK_EQ_INT(nt_store_append_wait(s, &op), 0);
    CHECK(op.duplicate);
    CHECK_EQ_INT(op.msg.seq, 1);
    nt_append_release(&op);
    nt_store_close(s);
}

/* A new user and chat; on new files if `clean`, else next to what the
 * earlier cases left (and replayed). */
static int64_t fresh(bool clean, const char *nick, int64_t *user)
{
    if (clean) cleanup_files();
    nt_store *s = open_store();
    if (!s) return 0;
    int64_t chat = setup_chat(s, nick, user);
    nt_store_close(s);
    CHECK(chat > 0);
    return chat;
}

static void wait_child(pid_t pid, int want)
{
    int status = 0;
    CHECK_EQ_INT(waitpid(pid, &status, 0), pid);
    if (want == 0)
        CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    else
        CHECK(WIFSIGNALED(status) && WTERMSIG(status) == want);
}

int main(void)
{
    const char *dir = getenv("NT_TEST_TMP");
    if (!dir || !dir[0]) dir = "/tmp";
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        perror(dir);
        return 1;
    }
    snprintf(db_path, sizeof(db_path), "%s/test_store_crash_%d.db", dir, (int)getpid());
    snprintf(db_url, sizeof(db_url), "sqlite:%s", db_path);
    snprintf(acks_path, sizeof(acks_path), "%s.acks", db_path);

    /* 1. Dies right after its acks. */
    int64_t user = 0, chat = fresh(true, "crash1", &user);
    pid_t pid = fork();
    if (pid == 0) child(chat, user, 50, 0, 0);
    wait_child(pid, 0);
    check_after_crash(chat, user, "exit-before-commit");

    /* 2. A pause in the middle (the checkpointer's idle TRUNCATE may run),
     * more appends after it, then death. */
    chat = fresh(true, "crash2", &user);
    pid = fork();
    if (pid == 0) child(chat, user, 80, 40, 600);
    wait_child(pid, 0);
    check_after_crash(chat, user, "exit-after-commit");

    /* 3. SIGKILL in the middle of a stream of appends, twice in a row on
     * the same files (the second run starts from what the first left). */
    for (int round = 0; round < 2; round++) {
        chat = fresh(round == 0, round ? "kill2" : "kill1", &user);
        pid = fork();
        if (pid == 0) child(chat, user, -1, 0, 0);
        usleep(round ? 300000 : 700000);
        kill(pid, SIGKILL);
        wait_child(pid, SIGKILL);
        check_after_crash(chat, user, round ? "sigkill-2" : "sigkill-1");
    }

    cleanup_files();
    return check_exit();
}
