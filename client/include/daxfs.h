/* daxfs.h: direct access to files on a daxfs mount (C ABI of the daxfs-client crate).
 *
 * Build: `cargo build --release -p daxfs-client` gives target/release/libdaxfs_client.so;
 * link with -ldaxfs_client.
 *
 * A client connects to the mount's daemon, opens files through the mount (the kernel checks
 * permissions) and maps byte ranges under layout leases: loads and stores then reach the
 * device with no system call. Without direct access (the daemon would not hand over the
 * device, the file is not DAX, no control socket) the same calls work through pread/pwrite
 * and daxfs_*_direct() says why. See README.md, "Direct access (client library)".
 *
 * Return values: int functions give >= 0 on success, -errno on failure; pointer functions
 * give NULL on failure. daxfs_last_error() has the text of the thread's last failure.
 * A revoked lease fails with -EKEYREVOKED.
 */
#ifndef DAXFS_H
#define DAXFS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct daxfs_client daxfs_client;
typedef struct daxfs_file daxfs_file;
typedef struct daxfs_mapping daxfs_mapping;

const char *daxfs_last_error(void);

/* Connect to the daemon of the mount holding `path` (any file or directory on it). */
daxfs_client *daxfs_connect(const char *path);
void daxfs_disconnect(daxfs_client *c);
/* 1: direct access; 0: fallback, reason copied into buf (len bytes, NUL-terminated). */
int daxfs_client_direct(const daxfs_client *c, char *buf, size_t len);

/* Open a file on the mount for reading (write = 0) or reading and writing. */
daxfs_file *daxfs_open(const daxfs_client *c, const char *path, int write);
int daxfs_file_direct(const daxfs_file *f, char *buf, size_t len);
/* File size as this client sees it (its appends included). */
int64_t daxfs_size(const daxfs_file *f);
/* Append at this client's EOF; returns the offset written at. No daemon round trip except
 * every 2 MiB; the size is committed at daxfs_fsync/daxfs_close, after the data persists. */
int64_t daxfs_append(const daxfs_file *f, const void *buf, size_t len);
int daxfs_fsync(const daxfs_file *f);
/* Commits appends and closes (always closes). */
int daxfs_close(daxfs_file *f);

/* Map [off, off+len) (len <= 64 MiB) for reading or writing. A write mapping allocates
 * holes and space past EOF (zeroed). Unmapping returns the leases. */
daxfs_mapping *daxfs_map(const daxfs_file *f, uint64_t off, uint64_t len, int write);
void daxfs_unmap(daxfs_mapping *m);
/* Copies at file offsets inside the mapping. */
int daxfs_read(const daxfs_mapping *m, uint64_t off, void *buf, size_t len);
int daxfs_write(const daxfs_mapping *m, uint64_t off, const void *buf, size_t len);
/* Make stores to the range durable (flush+fence, msync, or nothing for memfd). */
int daxfs_persist(const daxfs_mapping *m, uint64_t off, uint64_t len);
/* Grow the file to `size` (inside the write mapping); persist the data first. */
int daxfs_commit_size(const daxfs_mapping *m, uint64_t size);
/* Raw access: the address of the mapping's first byte, valid until the matching
 * daxfs_unpin. A recall waits for unpin (keep pins short); after it the next pin maps the
 * new layout, maybe at the same address. NULL on failure (e.g. revoked, or fallback). */
void *daxfs_pin(daxfs_mapping *m);
int daxfs_unpin(daxfs_mapping *m);

#ifdef __cplusplus
}
#endif

#endif
