#!/usr/bin/env python3
"""Compares builds of enginebench with each other and with fio, in the same run.

Each repetition runs fio and every given enginebench binary once, back to
back, rotating which goes first, on the same file with the same engine,
depth and block size (4 KiB random O_DIRECT reads; fio's psync gets
numjobs=DEPTH against DEPTH goroutines). It prints one line per repetition
(IOPS, ratio to fio, CPU time per operation, requests per submission, the Go
scheduler's median latency) and, per binary, the median of the
per-repetition ratios. Use it to decide whether a change to an engine is
better than the code before it: build the old and the new enginebench
(`go build -o /tmp/eb-old ./bench/engines/enginebench`, change, build
again) and give both.

usage: ab.py ENGINE DEPTH REPS BINARY...
env:   FILE (default /var/tmp/overlaybd-engines-bench.dat, must exist),
       RUNTIME seconds per run (default 3), MODE goroutines|batch,
       PRE a command prefix for every run, e.g. PRE="nice -n -20"
"""
import json
import os
import statistics
import subprocess
import sys

if len(sys.argv) < 5:
    sys.exit(__doc__)
eng, depth, reps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
bins = sys.argv[4:]
path = os.environ.get("FILE", "/var/tmp/overlaybd-engines-bench.dat")
runtime = os.environ.get("RUNTIME", "3")
mode = os.environ.get("MODE", "goroutines")
pre = os.environ.get("PRE", "").split()


def fio():
    jobs, qd = (depth, 1) if eng == "psync" else (1, depth)
    out = subprocess.run(pre + [
        "fio", "--name=ab", "--filename=" + path, "--rw=randread", "--bs=4k", "--direct=1",
        "--ioengine=" + eng, "--iodepth=%d" % qd, "--numjobs=%d" % jobs, "--runtime=" + runtime,
        "--time_based", "--group_reporting", "--norandommap", "--randrepeat=0", "--invalidate=0",
        "--output-format=json"], capture_output=True, text=True, check=True).stdout
    j = json.loads(out)["jobs"][0]
    n = j["read"]["total_ios"]
    return {"iops": j["read"]["iops"],
            "cpu": (j["usr_cpu"] + j["sys_cpu"]) / 100 * j["elapsed"] * 1e6 * jobs / max(n, 1)}


def ours(binary):
    out = subprocess.run(pre + [
        binary, "-engine", eng, "-file", path, "-depth", str(depth), "-queue", str(max(depth, 16)),
        "-runtime", runtime + "s", "-mode", mode], capture_output=True, text=True, check=True).stdout
    d = json.loads(out)
    return {"iops": d["iops"], "cpu": d["cpu_us_per_op"],
            "batch": d["submitted_requests"] / max(d["submits"], 1), "sched": d.get("sched_p50_us", 0)}


ratios = {b: [] for b in bins}
for rep in range(reps):
    load = open("/proc/loadavg").read().split()[0]
    order = [None] + bins
    k = rep % len(order)
    res = {o: (fio() if o is None else ours(o)) for o in order[k:] + order[:k]}
    line = "rep %d load %s fio %.0f (%.1f µs/op)" % (rep, load, res[None]["iops"], res[None]["cpu"])
    for b in bins:
        r = res[b]
        ratios[b].append(r["iops"] / res[None]["iops"])
        line += " | %s %.0f %.2f (%.1f µs/op, %.1f/submit, sched p50 %.0f µs)" % (
            os.path.basename(b), r["iops"], ratios[b][-1], r["cpu"], r["batch"], r["sched"])
    print(line, flush=True)
for b in bins:
    print("%s: median ratio to fio %.3f (%s)" % (b, statistics.median(ratios[b]), " ".join("%.2f" % x for x in ratios[b])))
