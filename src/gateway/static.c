/*
 * The web client's files, read once at start into memory so serving them
 * never touches the disk on the loop thread. Folders are read two levels
 * deep; "/" serves index.html.
 */
#include "gateway/gateway_internal.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define STATIC_MAX_FILE (8 * 1024 * 1024)

static const char *content_type_of(const char *name)
{
    static const struct {
        const char *ext, *type;
    } types[] = {
        {".html", "text/html; charset=utf-8"},
        {".js", "text/javascript; charset=utf-8"},
        {".mjs", "text/javascript; charset=utf-8"},
        {".css", "text/css; charset=utf-8"},
        {".json", "application/json"},
        {".webmanifest", "application/manifest+json"},
        {".svg", "image/svg+xml"},
        {".png", "image/png"},
        {".ico", "image/x-icon"},
        {".txt", "text/plain; charset=utf-8"},
    };
    const char *dot = strrchr(name, '.');
    for (size_t i = 0; dot && i < sizeof types / sizeof types[0]; i++)
        if (!strcmp(dot, types[i].ext)) return types[i].type;
    return "application/octet-stream";
}

static int read_file(const char *path, nt_buf *out)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    char chunk[16384];
    ssize_t n;
    while ((n = read(fd, chunk, sizeof chunk)) > 0) {
        if (out->len + (size_t)n > STATIC_MAX_FILE || nt_buf_append(out, chunk, (size_t)n)) {
            close(fd);
            return -1;
        }
    }
    close(fd);
    return n < 0 ? -1 : 0;
}

static void load_dir(nt_gateway *gw, const char *dir, const char *prefix, int depth)
{
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char path[1024], url[512];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        snprintf(url, sizeof url, "%s/%s", prefix, e->d_name);
        struct stat st;
        if (stat(path, &st) != 0) continue;
        if (S_ISDIR(st.st_mode)) {
            if (depth < 2) load_dir(gw, path, url, depth + 1);
            continue;
        }
        if (!S_ISREG(st.st_mode)) continue;
        gw_static_file *files = realloc(gw->files, (gw->nfiles + 1) * sizeof *files);
        if (!files) break;
        gw->files = files;
        gw_static_file *f = &files[gw->nfiles];
        memset(f, 0, sizeof *f);
        if (read_file(path, &f->body) != 0 || !(f->path = strdup(url))) {
            nt_buf_free(&f->body);
            continue;
        }
        f->content_type = content_type_of(e->d_name);
        gw->nfiles++;
    }
    closedir(d);
}

int gw_static_load(nt_gateway *gw, const char *web_dir)
{
    struct stat st;
    if (stat(web_dir, &st) != 0 || !S_ISDIR(st.st_mode)) return -1;
    load_dir(gw, web_dir, "", 0);
    return 0;
}

const gw_static_file *gw_static_find(nt_gateway *gw, const char *path)
{
    if (!strcmp(path, "/")) path = "/index.html";
    for (size_t i = 0; i < gw->nfiles; i++)
        if (!strcmp(gw->files[i].path, path)) return &gw->files[i];
    return NULL;
}

void gw_static_free(nt_gateway *gw)
{
    for (size_t i = 0; i < gw->nfiles; i++) {
        free(gw->files[i].path);
        nt_buf_free(&gw->files[i].body);
    }
    free(gw->files);
    gw->files = NULL;
    gw->nfiles = 0;
}
