#!/usr/bin/env python3
"""Summarises bench/engines/run.sh results (JSON lines) as a markdown table.

For each case and engine: median IOPS of fio and of our engine (N goroutines,
and one goroutine submitting batches where measured), and the ratio ours/fio
as the median of the per-repetition ratios (each repetition runs fio and ours
back to back, so pairing cancels part of the machine's drift). Cases with
no fio peer for an engine are compared with our psync instead.

usage: summary.py RESULTS.jsonl
"""
import collections
import json
import statistics
import sys

rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
runs = collections.defaultdict(list)
cpu = collections.defaultdict(list)
last = {}
cases = []
for r in rows:
    runs[(r["case"], r["engine"], r["impl"])].append(r["iops"])
    if "cpu_us_per_op" in r:
        cpu[(r["case"], r["engine"], r["impl"])].append(r["cpu_us_per_op"])
    if r["impl"].startswith("ours"):
        last[(r["case"], r["engine"], r["impl"])] = r
    if r["case"] not in cases:
        cases.append(r["case"])


def med(xs):
    return statistics.median(xs) if xs else None


def paired(ours, peer):
    if not ours or not peer:
        return None
    return statistics.median(o / p for o, p in zip(ours, peer) if p)


def fmt(x, spec="%.0f"):
    return spec % x if x is not None else ""


print("| case | engine | fio IOPS | ours, N goroutines | ours/fio | ours, batches | ours/fio | max in flight | requests per submit | CPU µs/op fio / ours |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
for c in cases:
    engines = []
    for (cc, e, _) in runs:
        if cc == c and e not in engines:
            engines.append(e)
    psync = runs.get((c, "psync", "ours-goroutines"))
    for e in engines:
        f = runs.get((c, e, "fio"))
        g = runs.get((c, e, "ours-goroutines"))
        b = runs.get((c, e, "ours-batch"))
        if f:
            rg, rb, note = paired(g, f), paired(b, f), ""
        else:
            rg, rb, note = paired(g, psync), None, " of our psync"
        x = last.get((c, e, "ours-goroutines"), {})
        per = x["submitted_requests"] / max(x["submits"], 1) if x else None
        cf, cg = med(cpu.get((c, e, "fio"), [])), med(cpu.get((c, e, "ours-goroutines"), []))
        cpucol = "%s / %s" % (fmt(cf, "%.1f"), fmt(cg, "%.1f")) if cf is not None or cg is not None else ""
        print("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
            c, e, fmt(med(f)), fmt(med(g)), fmt(rg, "%.2f") + (note if rg is not None else ""),
            fmt(med(b)), fmt(rb, "%.2f"), x.get("max_in_flight", ""), fmt(per, "%.1f"), cpucol))
n = max(len(v) for v in runs.values())
print("\n(medians of %d runs; ratios are medians of per-repetition ratios; raw results in %s)" % (n, sys.argv[1]))
