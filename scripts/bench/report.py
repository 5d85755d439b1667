#!/usr/bin/env python3
"""Summarize scripts/bench.sh's raw lines (`pass fs workload unit value`): medians over
passes, spread, daxfs ÷ reference (memfs) and daxfs ÷ tmpfs. Writes results.json and
results.csv next to the raw file, a Markdown table on stdout, and bars per workload into
the images directory when matplotlib is there.

Usage: report.py RAW IMAGES_DIR
"""
import csv
import json
import math
import os
import statistics
import sys

raw, images = sys.argv[1], sys.argv[2]
out = os.path.dirname(raw)
FS = ["daxfs", "daxfs-disk", "memfs", "tmpfs"]
vals, units, order = {}, {}, []
for line in open(raw):
    p = line.split()
    if len(p) != 5:
        continue
    _, fs, w, unit, v = p
    if w not in units:
        order.append(w)
    units[w] = unit
    v = float(v)
    if not math.isnan(v):
        vals.setdefault(w, {}).setdefault(fs, []).append(v)


def med(w, fs):
    v = vals.get(w, {}).get(fs)
    return statistics.median(v) if v else float("nan")


def spread(w, fs):
    """(max - min) / median, in percent: how far apart the passes were."""
    v = vals.get(w, {}).get(fs)
    if not v or len(v) < 2 or statistics.median(v) == 0:
        return float("nan")
    return 100 * (max(v) - min(v)) / statistics.median(v)


def ratio(a, b):
    return a / b if b and not math.isnan(a) and not math.isnan(b) else float("nan")


present = [f for f in FS if any(f in vals.get(w, {}) for w in order)]
rows = []
for w in order:
    r = {"workload": w, "unit": units[w]}
    for fs in present:
        r[fs] = med(w, fs)
        r[fs + "_spread_pct"] = spread(w, fs)
        r[fs + "_passes"] = vals.get(w, {}).get(fs, [])
    r["daxfs/memfs"] = ratio(r.get("daxfs", math.nan), r.get("memfs", math.nan))
    r["daxfs/tmpfs"] = ratio(r.get("daxfs", math.nan), r.get("tmpfs", math.nan))
    if "daxfs-disk" in present:
        r["daxfs-disk/memfs"] = ratio(r["daxfs-disk"], r.get("memfs", math.nan))
        r["daxfs-disk/tmpfs"] = ratio(r["daxfs-disk"], r.get("tmpfs", math.nan))
    rows.append(r)


def clean(x):
    if isinstance(x, float) and math.isnan(x):
        return None
    return x


with open(os.path.join(out, "results.json"), "w") as f:
    json.dump([{k: clean(v) for k, v in r.items()} for r in rows], f, indent=1)
cols = ["workload", "unit"] + [c for fs in present for c in (fs, fs + "_spread_pct")]
cols += [c for c in ("daxfs/memfs", "daxfs/tmpfs", "daxfs-disk/memfs", "daxfs-disk/tmpfs") if rows and c in rows[0]]
with open(os.path.join(out, "results.csv"), "w", newline="") as f:
    wr = csv.writer(f)
    wr.writerow(cols)
    for r in rows:
        wr.writerow([("" if isinstance(r.get(c), float) and math.isnan(r[c]) else
                      (round(r[c], 3) if isinstance(r.get(c), float) else r.get(c))) for c in cols])


def fmt(v, s):
    if math.isnan(v):
        return "—"
    t = f"{v:.0f}" if v >= 100 else f"{v:.1f}"
    return t if math.isnan(s) else f"{t} ±{s / 2:.0f}%"


ratios = [c for c in ("daxfs/memfs", "daxfs/tmpfs", "daxfs-disk/memfs", "daxfs-disk/tmpfs") if rows and c in rows[0]]
head = ["workload", "unit"] + present + [c.replace("/", " ÷ ") for c in ratios]
print("| " + " | ".join(head) + " |")
print("|---|---|" + "---:|" * (len(head) - 2))
for r in rows:
    cells = [r["workload"], r["unit"]] + [fmt(r[fs], r[fs + "_spread_pct"]) for fs in present]
    cells += ["—" if math.isnan(r[c]) else f"{r[c]:.2f}" for c in ratios]
    print("| " + " | ".join(cells) + " |")
print()
print("Medians over passes; ±x% is half the spread (max − min) ÷ median. memfs is the in-repo")
print("FUSE reference (examples/memfs.rs); daxfs-disk is daxfs on an image file on the disk.")

try:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
except ImportError:
    print("\n(no matplotlib: no plots; install python3-matplotlib)", file=sys.stderr)
    sys.exit(0)

os.makedirs(images, exist_ok=True)
fig, ax = plt.subplots(figsize=(max(8, 0.55 * len(rows)), 5))
width = 0.8 / max(1, len(present))
colors = {"daxfs": "#1f77b4", "daxfs-disk": "#17becf", "memfs": "#ff7f0e", "tmpfs": "#7f7f7f"}
for i, fs in enumerate(present):
    xs = [k + (i - (len(present) - 1) / 2) * width for k in range(len(rows))]
    ys = [ratio(r[fs], r.get("memfs", math.nan)) for r in rows]
    ax.bar(xs, [0 if math.isnan(y) else y for y in ys], width, label=fs, color=colors.get(fs))
ax.set_yscale("log")
ax.axhline(1.0, color="black", linewidth=0.8)
ax.set_xticks(range(len(rows)))
ax.set_xticklabels([r["workload"] for r in rows], rotation=60, ha="right", fontsize=8)
ax.set_ylabel("throughput ÷ FUSE reference (memfs), log scale")
ax.set_title("scripts/bench.sh: median of passes, relative to the in-memory FUSE reference")
ax.legend()
fig.tight_layout()
p = os.path.join(images, "bench.png")
fig.savefig(p, dpi=110)
print(f"\nplot: {p}")
