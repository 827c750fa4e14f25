#include "fileio.h"
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "base.h"

void path_join(char *out, size_t cap, const char *dir, const char *name) {
    snprintf(out, cap, "%s/%s", dir, name);
}
int path_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}
int dir_ensure(const char *dir) {
    struct stat st;
    if (stat(dir, &st) == 0) {
        if (!S_ISDIR(st.st_mode)) MOE_ERR("%s: exists and is not a directory", dir);
        return MOE_OK;
    }
    // create the parents first, as mkdir -p
    char *copy = moe_strdup(dir);
    for (char *p = copy + 1; *p; p++) {
        if (*p != '/') continue;
        *p = 0;
        if (mkdir(copy, 0755) != 0 && errno != EEXIST) {
            int e = errno;
            moe_free(copy);
            MOE_ERR("%s: cannot create directory: %s", dir, strerror(e));
        }
        *p = '/';
    }
    moe_free(copy);
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) MOE_ERR("%s: cannot create directory: %s", dir, strerror(errno));
    return MOE_OK;
}
int fsync_dir_of(const char *path) {
    char *copy = moe_strdup(path);
    int fd = open(dirname(copy), O_RDONLY | O_DIRECTORY);
    moe_free(copy);
    if (fd < 0) return MOE_OK;   // best effort: not every filesystem lets us
    fsync(fd);
    close(fd);
    return MOE_OK;
}
static void tmp_name(char *out, size_t cap, const char *path) { snprintf(out, cap, "%s.tmp", path); }

FILE *file_atomic_open(const char *path) {
    char tmp[4096];
    tmp_name(tmp, sizeof tmp, path);
    FILE *f = fopen(tmp, "wb");
    if (!f) moe_seterr("%s: cannot write: %s", tmp, strerror(errno));
    return f;
}
int file_atomic_commit(FILE *f, const char *path) {
    char tmp[4096];
    tmp_name(tmp, sizeof tmp, path);
    int bad = fflush(f) != 0 || ferror(f) || fsync(fileno(f)) != 0;
    int err = errno;
    if (fclose(f) != 0) bad = 1;
    if (bad) { unlink(tmp); MOE_ERR("%s: write failed: %s", tmp, strerror(err)); }
    if (rename(tmp, path) != 0) { err = errno; unlink(tmp); MOE_ERR("%s: cannot rename into place: %s", path, strerror(err)); }
    return fsync_dir_of(path);
}
void file_atomic_abort(FILE *f, const char *path) {
    char tmp[4096];
    tmp_name(tmp, sizeof tmp, path);
    if (f) fclose(f);
    unlink(tmp);
}
int file_write_atomic(const char *path, const void *data, size_t n) {
    FILE *f = file_atomic_open(path);
    if (!f) return MOE_FAIL;
    if (fwrite(data, 1, n, f) != n) { file_atomic_abort(f, path); MOE_ERR("%s: short write", path); }
    return file_atomic_commit(f, path);
}
