#!/usr/bin/env python3
"""Per-operation cost against size, for scripts/bench.sh --scaling. One filesystem.

Usage: scaling.py extents DIR FS MAX BATCH
       scaling.py dir     DIR FS MAX BATCH

extents: a sparse file of 2*MAX blocks; 4 KiB writes into holes (every other block, in
  random order, so no two written blocks touch and every write makes one more extent).
  At checkpoints 10, 20, 50, 100, ... up to MAX extents it measures BATCH more hole writes
  ("hole-write", which take the file to the next extent count) and BATCH overwrites of
  random written blocks ("overwrite"), each as ns per operation.
dir: one directory grown by creates to checkpoints 10, 20, 50, ... MAX entries; at each,
  BATCH creates ("create"), BATCH stats of random older names after the kernel's entry
  timeout ("lookup"), BATCH unlinks of random names recreated afterwards ("unlink"),
  and one full listing ("readdir", ns per entry).
Prints CSV lines: kind,fs,size,op,ns_per_op. Writes are pwrite(2) on a descriptor
without O_DIRECT: FUSE without a write-back cache sends each one to the daemon.
"""
import os
import random
import sys
import time

kind, d, fs, mx, batch = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
rng = random.Random(13)


def checkpoints(mx):
    out, m = [], 10
    while m < mx:
        for k in (1, 2, 5):
            if k * m < mx:
                out.append(k * m)
        m *= 10
    out.append(mx)
    return out


def emit(size, op, ns):
    print(f"{kind},{fs},{size},{op},{ns:.0f}", flush=True)


def extents():
    path = os.path.join(d, "sparse")
    fd = os.open(path, os.O_CREAT | os.O_RDWR | os.O_TRUNC, 0o644)
    os.ftruncate(fd, 2 * (mx + batch) * 4096)
    holes = list(range(0, 2 * (mx + batch), 2))
    rng.shuffle(holes)
    buf = os.urandom(4096)
    written = []
    pos = 0
    for cp in checkpoints(mx):
        while len(written) < cp:  # grow to the checkpoint, untimed
            b = holes[pos]
            pos += 1
            os.pwrite(fd, buf, b * 4096)
            written.append(b)
        t = time.perf_counter_ns()
        for _ in range(batch):
            b = holes[pos]
            pos += 1
            os.pwrite(fd, buf, b * 4096)
            written.append(b)
        emit(cp, "hole-write", (time.perf_counter_ns() - t) / batch)
        picks = [written[rng.randrange(len(written))] for _ in range(batch)]
        t = time.perf_counter_ns()
        for b in picks:
            os.pwrite(fd, buf, b * 4096)
        emit(cp, "overwrite", (time.perf_counter_ns() - t) / batch)
    os.close(fd)
    os.unlink(path)


def directory():
    top = os.path.join(d, "big")
    os.mkdir(top)
    n = 0
    made = set()

    def create(i):
        os.close(os.open(f"{top}/f{i}", os.O_CREAT | os.O_WRONLY, 0o644))
        made.add(i)

    for cp in checkpoints(mx):
        while n < cp:
            create(n)
            n += 1
        t = time.perf_counter_ns()
        for _ in range(batch):
            create(n)
            n += 1
        emit(cp, "create", (time.perf_counter_ns() - t) / batch)
        # Past the 1 s entry timeout: every stat is a LOOKUP in the filesystem.
        time.sleep(1.2)
        names = list(made)
        picks = [names[rng.randrange(len(names))] for _ in range(batch)]
        t = time.perf_counter_ns()
        for i in picks:
            os.stat(f"{top}/f{i}")
        emit(cp, "lookup", (time.perf_counter_ns() - t) / batch)
        victims = rng.sample(names, min(batch, len(names)))
        t = time.perf_counter_ns()
        for i in victims:
            os.unlink(f"{top}/f{i}")
        emit(cp, "unlink", (time.perf_counter_ns() - t) / len(victims))
        for i in victims:
            os.close(os.open(f"{top}/f{i}", os.O_CREAT | os.O_WRONLY, 0o644))
        t = time.perf_counter_ns()
        k = sum(1 for _ in os.scandir(top))
        assert k == len(made), (k, len(made))
        emit(cp, "readdir", (time.perf_counter_ns() - t) / k)
    for i in made:
        os.unlink(f"{top}/f{i}")
    os.rmdir(top)


extents() if kind == "extents" else directory()
