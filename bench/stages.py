#!/usr/bin/env python3
"""Per-stage breakdown of Meridian's write pipeline from two /metrics scrapes.

Usage: bench/stages.py BEFORE.txt AFTER.txt
Prints, per stage of meridian_write_stage_seconds (in pipeline order), how
many observations fell between the scrapes, the mean, and an upper bound on
the median and p99 from the histogram buckets; then the request latency
(meridian_api_write_seconds) and ops per fsync beside them.
"""
import re
import sys

ORDER = ["queue", "stage", "group_wait", "log_write", "fsync", "commit",
         "publish", "answer", "wake"]
PER_GROUP = {"log_write", "fsync", "commit", "publish", "answer"}
LINE = re.compile(r'^(meridian_[a-z_]+)\{([^}]*)\} ([0-9.eE+-]+|NaN)$')


def scrape(path):
    out = {}
    for line in open(path):
        m = LINE.match(line.strip())
        if not m:
            continue
        name, labels, value = m.groups()
        lab = dict(kv.split("=", 1) for kv in re.findall(r'[a-z_]+="[^"]*"', labels))
        lab = {k: v.strip('"') for k, v in lab.items()}
        out[(name, tuple(sorted(lab.items())))] = float(value)
    return out


def delta(a, b):
    return {k: v - a.get(k, 0.0) for k, v in b.items()}


def series(d, name, **want):
    """(sum, count, [(le, cumulative)]) of one histogram in d."""
    s = c = 0.0
    buckets = []
    for (n, lab), v in d.items():
        lab = dict(lab)
        if any(lab.get(k) != w for k, w in want.items()):
            continue
        if n == name + "_sum":
            s += v
        elif n == name + "_count":
            c += v
        elif n == name + "_bucket":
            le = lab["le"]
            buckets.append((float("inf") if le == "+Inf" else float(le), v))
    buckets.sort()
    return s, c, buckets


def quantile(buckets, count, q):
    for le, cum in buckets:
        if cum >= q * count:
            return le
    return float("nan")


def ms(x):
    return "%.3f" % (x * 1000)


def main():
    d = delta(scrape(sys.argv[1]), scrape(sys.argv[2]))
    print("| stage | per | count | mean ms | p50 <= ms | p99 <= ms |")
    print("|---|---|---:|---:|---:|---:|")
    for st in ORDER:
        s, c, b = series(d, "meridian_write_stage_seconds", stage=st)
        if c == 0:
            continue
        per = "group" if st in PER_GROUP else "write"
        print(f"| {st} | {per} | {int(c)} | {ms(s / c)} | {ms(quantile(b, c, .5))} | {ms(quantile(b, c, .99))} |")
    s, c, b = series(d, "meridian_api_write_seconds")
    if c:
        print(f"| request (handler, end to end) | write | {int(c)} | {ms(s / c)} | {ms(quantile(b, c, .5))} | {ms(quantile(b, c, .99))} |")
    s, c, _ = series(d, "meridian_log_group_commit_ops")
    if c:
        print(f"\nops per fsync (mean): {s / c:.1f} over {int(c)} groups")


if __name__ == "__main__":
    main()
