/*
 * The SQLite schema, as numbered migrations (included by store_sqlite.c
 * only). Migration N is sqlite_migrations[N - 1]. At open the store runs,
 * inside one write transaction, every migration above the highest version
 * recorded in schema_version, recording each one; a reopened file whose
 * version is current runs nothing. Migrations are append-only: never edit
 * one that has shipped, add the next (friends, blocks, match preferences...).
 *
 * Times are Unix milliseconds. Booleans are 0/1 integers. Text columns that
 * the API treats as "null" are NULL (gender, birth_date, client_id,
 * edited_at, extra_json); bio and avatar_url are '' when empty.
 */
#ifndef NT_MIGRATIONS_SQLITE_H
#define NT_MIGRATIONS_SQLITE_H

/* The current time in ms, for rows the migrations insert themselves. */
#define SQ_NOW_MS "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)"

static const char *const sqlite_migrations[] = {
    /* 1: accounts, sessions, chats, members, messages; the bot and the lobby. */
    "CREATE TABLE users ("
    "  id INTEGER PRIMARY KEY,"
    "  email TEXT NOT NULL,"
    "  nickname TEXT NOT NULL COLLATE NOCASE," /* nicknames are ASCII */
    "  password_hash TEXT NOT NULL,"
    "  bio TEXT NOT NULL DEFAULT '',"
    "  avatar_url TEXT NOT NULL DEFAULT '',"
    "  gender TEXT,"
    "  birth_date TEXT,"
    "  created_at INTEGER NOT NULL,"
    "  last_seen INTEGER NOT NULL DEFAULT 0"
    ");"
    "CREATE UNIQUE INDEX users_email ON users(lower(email));"
    "CREATE UNIQUE INDEX users_nickname ON users(nickname);"

    "CREATE TABLE sessions ("
    "  id INTEGER PRIMARY KEY,"
    "  user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,"
    "  created_at INTEGER NOT NULL,"
    "  revoked INTEGER NOT NULL DEFAULT 0"
    ");"
    "CREATE INDEX sessions_user ON sessions(user_id);"

    /* Only the SHA-256 of a refresh token is stored. */
    "CREATE TABLE refresh_tokens ("
    "  hash BLOB PRIMARY KEY,"
    "  session_id INTEGER NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,"
    "  expires_at INTEGER NOT NULL,"
    "  used INTEGER NOT NULL DEFAULT 0"
    ") WITHOUT ROWID;"
    "CREATE INDEX refresh_tokens_session ON refresh_tokens(session_id);"

    /* last_seq is the seq of the newest message: the next one gets
     * last_seq + 1, taken in the same transaction as the insert.
     * direct_key is "minid:maxid" for direct chats, NULL otherwise. */
    "CREATE TABLE chats ("
    "  id INTEGER PRIMARY KEY,"
    "  type TEXT NOT NULL CHECK (type IN ('direct', 'group', 'channel', 'random')),"
    "  title TEXT NOT NULL DEFAULT '',"
    "  created_at INTEGER NOT NULL,"
    "  last_seq INTEGER NOT NULL DEFAULT 0,"
    "  last_activity INTEGER NOT NULL,"
    "  closed INTEGER NOT NULL DEFAULT 0,"
    "  direct_key TEXT UNIQUE"
    ");"
    "CREATE INDEX chats_channel_title ON chats(title) WHERE type = 'channel';"

    "CREATE TABLE members ("
    "  chat_id INTEGER NOT NULL REFERENCES chats(id) ON DELETE CASCADE,"
    "  user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,"
    "  role INTEGER NOT NULL DEFAULT 0," /* NT_ROLE_MEMBER, NT_ROLE_OWNER */
    "  delivered_seq INTEGER NOT NULL DEFAULT 0,"
    "  read_seq INTEGER NOT NULL DEFAULT 0,"
    "  joined_at INTEGER NOT NULL,"
    "  PRIMARY KEY (chat_id, user_id)"
    ") WITHOUT ROWID;"
    "CREATE INDEX members_user ON members(user_id);"

    "CREATE TABLE messages ("
    "  id INTEGER PRIMARY KEY,"
    "  chat_id INTEGER NOT NULL REFERENCES chats(id) ON DELETE CASCADE,"
    "  seq INTEGER NOT NULL,"
    "  sender_id INTEGER NOT NULL REFERENCES users(id),"
    "  text TEXT NOT NULL,"
    "  ts INTEGER NOT NULL,"
    "  client_id TEXT,"
    "  edited_at INTEGER,"
    "  deleted INTEGER NOT NULL DEFAULT 0,"
    "  extra_json TEXT,"
    "  UNIQUE (chat_id, seq)"
    ");"
    "CREATE UNIQUE INDEX messages_client ON messages(sender_id, client_id)"
    "  WHERE client_id IS NOT NULL;"

    /* Every server has the bot (a password hash no verifier accepts) and the
     * public lobby channel, without an owner, where the bot posts. */
    "INSERT INTO users (email, nickname, password_hash, created_at)"
    "  VALUES ('bot@natter.invalid', 'bot', '!', " SQ_NOW_MS ");"
    "INSERT INTO chats (type, title, created_at, last_activity)"
    "  VALUES ('channel', 'lobby', " SQ_NOW_MS ", " SQ_NOW_MS ");"
    "INSERT INTO members (chat_id, user_id, role, joined_at)"
    "  SELECT c.id, u.id, 0, " SQ_NOW_MS " FROM chats c, users u"
    "  WHERE c.type = 'channel' AND c.title = 'lobby' AND u.nickname = 'bot';",

    /* 2: friends, friend requests, blocks, match preferences, random chats.
     * A friendship is two rows (a, b) and (b, a) so either side lists its
     * friends with one index range. genders is a bit set (NT_GENDER_*);
     * interests are the lowercase tags joined by ','. random_members holds
     * the alias of each member of a random chat: `revealed` is that member's
     * consent, `hidden` stays 1 until both consented (then both rows go 0). */
    "CREATE TABLE friends ("
    "  user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,"
    "  friend_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,"
    "  created_at INTEGER NOT NULL,"
    "  PRIMARY KEY (user_id, friend_id)"
    ") WITHOUT ROWID;"

    "CREATE TABLE friend_requests ("
    "  from_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,"
    "  to_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,"
    "  created_at INTEGER NOT NULL,"
    "  PRIMARY KEY (from_id, to_id)"
    ") WITHOUT ROWID;"
    "CREATE INDEX friend_requests_to ON friend_requests(to_id);"

    "CREATE TABLE blocks ("
    "  blocker_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,"
    "  blocked_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,"
    "  created_at INTEGER NOT NULL,"
    "  PRIMARY KEY (blocker_id, blocked_id)"
    ") WITHOUT ROWID;"
    "CREATE INDEX blocks_blocked ON blocks(blocked_id);"

    "CREATE TABLE match_prefs ("
    "  user_id INTEGER PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,"
    "  genders INTEGER NOT NULL,"
    "  age_min INTEGER NOT NULL,"
    "  age_max INTEGER NOT NULL,"
    "  interests TEXT NOT NULL DEFAULT '',"
    "  updated_at INTEGER NOT NULL"
    ");"

    "CREATE TABLE random_members ("
    "  chat_id INTEGER NOT NULL REFERENCES chats(id) ON DELETE CASCADE,"
    "  user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,"
    "  alias TEXT NOT NULL,"
    "  revealed INTEGER NOT NULL DEFAULT 0,"
    "  hidden INTEGER NOT NULL DEFAULT 1,"
    "  PRIMARY KEY (chat_id, user_id)"
    ") WITHOUT ROWID;",
};

#define SQLITE_MIGRATIONS_COUNT ((int)(sizeof(sqlite_migrations) / sizeof(sqlite_migrations[0])))

#endif
