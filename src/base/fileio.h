// Crash-safe file writing: write to PATH.tmp, fsync, rename over PATH, fsync the folder.
#pragma once
#include <stddef.h>
#include <stdio.h>

int file_write_atomic(const char *path, const void *data, size_t n);
// Streaming form: file_atomic_open gives a FILE* on PATH.tmp; file_atomic_commit flushes,
// fsyncs and renames it; file_atomic_abort removes the temporary.
FILE *file_atomic_open(const char *path);
int file_atomic_commit(FILE *f, const char *path);
void file_atomic_abort(FILE *f, const char *path);
int fsync_dir_of(const char *path);
int dir_ensure(const char *dir);          // mkdir -p; an error if it is a file
int path_exists(const char *path);
void path_join(char *out, size_t cap, const char *dir, const char *name);
