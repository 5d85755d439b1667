#!/usr/bin/env python3
"""Metadata workloads of scripts/bench.sh on one filesystem, one pass.

Usage: meta.py DIR FS PASS N MAXSECS
Each phase works on up to N entries in a fresh directory and stops early after MAXSECS
seconds (the later phases then use as many entries as the first one made), so a slow
filesystem cannot stretch the run without bound. Prints `pass fs workload unit value`
lines, higher is better.
"""
import os
import sys
import time

d0, fs, npass, n, maxsecs = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5])
d = os.path.join(d0, "meta")
os.mkdir(d)


def timed(name, items, op):
    """Run op over items until done or out of time; returns how many were done."""
    t0 = time.perf_counter()
    done = 0
    for x in items:
        op(x)
        done += 1
        if done % 64 == 0 and time.perf_counter() - t0 > maxsecs:
            break
    dt = time.perf_counter() - t0
    print(npass, fs, name, "ops/s", round(done / dt) if dt > 0 else 0, flush=True)
    return done


made = timed("create", range(n), lambda i: os.close(os.open(f"{d}/f{i}", os.O_CREAT | os.O_WRONLY, 0o644)))
# Past the entry/attribute timeout (1 s), so stat asks the filesystem (LOOKUP), as a cold
# tree would, instead of only the kernel's dentry cache.
time.sleep(1.2)
timed("stat", range(made), lambda i: os.stat(f"{d}/f{i}"))


def listing(_):
    k = sum(1 for _ in os.scandir(d))
    assert k == made, (k, made)


# readdir: the whole directory, entries/s.
t0 = time.perf_counter()
listing(0)
dt = time.perf_counter() - t0
print(npass, fs, "readdir", "entries/s", round(made / dt) if dt > 0 else 0, flush=True)
renamed = timed("rename", range(made), lambda i: os.rename(f"{d}/f{i}", f"{d}/g{i}"))
timed("unlink", range(made), lambda i: os.unlink(f"{d}/g{i}" if i < renamed else f"{d}/f{i}"))
for i in range(made):  # leftovers of a phase cut short
    for p in (f"{d}/f{i}", f"{d}/g{i}"):
        if os.path.lexists(p):
            os.unlink(p)
dirs = timed("mkdir", range(n), lambda i: os.mkdir(f"{d}/d{i}"))
timed("rmdir", range(dirs), lambda i: os.rmdir(f"{d}/d{i}"))
for i in range(dirs):
    if os.path.lexists(f"{d}/d{i}"):
        os.rmdir(f"{d}/d{i}")
os.rmdir(d)
