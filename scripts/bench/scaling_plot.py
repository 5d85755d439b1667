#!/usr/bin/env python3
"""Plot scripts/bench.sh --scaling's CSV: ns/op against size (log-log), one panel per
scaling kind, one line per filesystem and operation. Also prints a table of the cost at
each size relative to the cost at the first checkpoint at or above 1,000.

Usage: scaling_plot.py CSV IMAGES_DIR
"""
import collections
import os
import sys

csv_path, images = sys.argv[1], sys.argv[2]
data = collections.defaultdict(list)  # (kind, fs, op) -> [(size, ns)]
for line in open(csv_path):
    p = line.strip().split(",")
    if len(p) != 5 or p[0] == "kind":
        continue
    data[(p[0], p[1], p[3])].append((int(p[2]), float(p[4])))

for (kind, fs, op), pts in sorted(data.items()):
    pts.sort()
    base = next((ns for s, ns in pts if s >= 1000), pts[0][1])
    cells = " ".join(f"{s}:{ns / 1000:.1f}us" for s, ns in pts)
    print(f"{kind:8} {fs:11} {op:11} last/at-1k {pts[-1][1] / base:5.2f}x  {cells}")

try:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
except ImportError:
    print("(no matplotlib: no plots; install python3-matplotlib)", file=sys.stderr)
    sys.exit(0)
os.makedirs(images, exist_ok=True)
for kind, title, xl in (("extents", "4 KiB writes against the file's extent count", "extents in the file"),
                        ("dir", "directory operations against the directory's size", "entries in the directory")):
    series = {k: v for k, v in data.items() if k[0] == kind}
    if not series:
        continue
    fig, ax = plt.subplots(figsize=(8, 5))
    for (_, fs, op), pts in sorted(series.items()):
        ax.plot([s for s, _ in pts], [ns / 1000 for _, ns in pts], marker="o", markersize=3,
                linestyle="-" if fs.startswith("daxfs") else "--", label=f"{fs} {op}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(xl)
    ax.set_ylabel("µs per operation")
    ax.set_title(f"scripts/bench.sh --scaling: {title}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    p = os.path.join(images, f"scaling-{kind}.png")
    fig.savefig(p, dpi=110)
    print(f"plot: {p}")
