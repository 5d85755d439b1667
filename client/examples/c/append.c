/* A C client of libdaxfs: append 1000 records without a daemon round trip each, fsync
 * (commits the size), then overwrite the first bytes through a pinned pointer.
 * Usage: append FILE_ON_A_DAXFS_MOUNT. Prints "direct 1" when it got the device. */
#include <stdio.h>
#include <string.h>
#include "daxfs.h"

static int die(const char *what) {
    fprintf(stderr, "%s: %s\n", what, daxfs_last_error());
    return 1;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s FILE\n", argv[0]);
        return 2;
    }
    daxfs_client *c = daxfs_connect(argv[1]);
    if (!c)
        return die("connect");
    daxfs_file *f = daxfs_open(c, argv[1], 1);
    if (!f)
        return die("open");
    char why[256];
    int direct = daxfs_file_direct(f, why, sizeof why);
    printf("direct %d%s%s\n", direct, direct ? "" : ": ", direct ? "" : why);
    for (int i = 0; i < 1000; i++) {
        char rec[32];
        int n = snprintf(rec, sizeof rec, "record %04d\n", i);
        if (daxfs_append(f, rec, (size_t)n) != (int64_t)i * n)
            return die("append");
    }
    if (daxfs_fsync(f) != 0)
        return die("fsync");
    daxfs_mapping *m = daxfs_map(f, 0, 4096, 1);
    if (!m)
        return die("map");
    char *p = daxfs_pin(m);
    if (!p)
        return die("pin");
    memcpy(p, "RECORD", 6);
    daxfs_unpin(m);
    if (daxfs_persist(m, 0, 6) != 0)
        return die("persist");
    daxfs_unmap(m);
    if (daxfs_close(f) != 0)
        return die("close");
    daxfs_disconnect(c);
    return 0;
}
