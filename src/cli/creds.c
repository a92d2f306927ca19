/*
 * The saved session of the terminal client: one small JSON object (server,
 * user id, nickname, access and refresh token) in
 * $XDG_CONFIG_HOME/natter/credentials (default ~/.config/natter/credentials).
 * The folder is made 0700 and the file 0600; it is written to a temporary
 * file in the same folder and renamed over the old one, so a crash never
 * leaves half a file and the tokens are never readable by others, not even
 * for a moment.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/cli.h"
#include "common/json.h"

#define CREDS_MAX_FILE 8192

/* The folder holding the credentials file. */
static int creds__dir(char *out, size_t cap)
{
    const char *xdg = getenv("XDG_CONFIG_HOME");
    int n;
    if (xdg && xdg[0] == '/') {
        n = snprintf(out, cap, "%s/natter", xdg);
    } else {
        const char *home = getenv("HOME");
        if (!home || !*home) return -ENOENT;
        n = snprintf(out, cap, "%s/.config/natter", home);
    }
    return n < 0 || (size_t)n >= cap ? -ENAMETOOLONG : 0;
}

int nt_cli_creds_path(char *out, size_t cap)
{
    char dir[4096];
    int rc = creds__dir(dir, sizeof dir);
    if (rc) return rc;
    int n = snprintf(out, cap, "%s/credentials", dir);
    return n < 0 || (size_t)n >= cap ? -ENAMETOOLONG : 0;
}

/* mkdir -p for the parents, then the natter folder itself with 0700. */
static int creds__make_dir(const char *dir)
{
    char path[4096];
    snprintf(path, sizeof path, "%s", dir);
    for (char *p = path + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        if (mkdir(path, 0700) != 0 && errno != EEXIST) return -errno;
        *p = '/';
    }
    if (mkdir(path, 0700) != 0) {
        if (errno != EEXIST) return -errno;
        /* It existed: make sure nobody else can list it. */
        if (chmod(path, 0700) != 0) return -errno;
    }
    return 0;
}

int nt_cli_creds_load(nt_cli_creds *out)
{
    memset(out, 0, sizeof *out);
    char path[4200];
    int rc = nt_cli_creds_path(path, sizeof path);
    if (rc) return rc;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -errno;
    char text[CREDS_MAX_FILE];
    ssize_t n = read(fd, text, sizeof text - 1);
    int err = n < 0 ? -errno : 0;
    close(fd);
    if (err) return err;
    text[n] = '\0';
    size_t len = (size_t)n;
    if (ntc_json_str(text, len, "server", out->server, sizeof out->server) < 0 ||
        ntc_json_int(text, len, "user_id", &out->user_id) != 0 ||
        ntc_json_str(text, len, "access_token", out->access_token, sizeof out->access_token) < 0 ||
        ntc_json_str(text, len, "refresh_token", out->refresh_token, sizeof out->refresh_token) <
            0) {
        memset(out, 0, sizeof *out);
        return -EINVAL;
    }
    if (ntc_json_str(text, len, "nickname", out->nickname, sizeof out->nickname) < 0)
        out->nickname[0] = '\0';
    return 0;
}

int nt_cli_creds_save(const nt_cli_creds *c)
{
    char dir[4096], path[4200], tmp[4300];
    int rc = creds__dir(dir, sizeof dir);
    if (rc) return rc;
    if ((rc = creds__make_dir(dir)) != 0) return rc;
    snprintf(path, sizeof path, "%s/credentials", dir);
    snprintf(tmp, sizeof tmp, "%s/.credentials.%d", dir, (int)getpid());

    nt_buf text = NT_BUF_INIT;
    nt_jw w;
    nt_jw_init(&w, &text);
    nt_jw_obj(&w);
    nt_jw_kstr(&w, "server", c->server);
    nt_jw_kint(&w, "user_id", c->user_id);
    nt_jw_kstr(&w, "nickname", c->nickname);
    nt_jw_kstr(&w, "access_token", c->access_token);
    nt_jw_kstr(&w, "refresh_token", c->refresh_token);
    nt_jw_obj_end(&w);
    if ((rc = nt_jw_error(&w)) != 0 || (rc = nt_buf_append(&text, "\n", 1)) != 0) goto fail;

    unlink(tmp);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        rc = -errno;
        goto fail;
    }
    /* The umask may only take bits away, but be explicit. */
    if (fchmod(fd, 0600) != 0 || write(fd, text.data, text.len) != (ssize_t)text.len ||
        fsync(fd) != 0) {
        rc = errno ? -errno : -EIO;
        close(fd);
        goto fail_unlink;
    }
    if (close(fd) != 0 || rename(tmp, path) != 0) {
        rc = -errno;
        goto fail_unlink;
    }
    nt_buf_free(&text);
    return 0;

fail_unlink:
    unlink(tmp);
fail:
    nt_buf_free(&text);
    return rc;
}

int nt_cli_creds_remove(void)
{
    char path[4200];
    int rc = nt_cli_creds_path(path, sizeof path);
    if (rc) return rc;
    return unlink(path) == 0 ? 0 : -errno;
}
