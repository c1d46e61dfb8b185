#!/usr/bin/env python3
"""Tables for ferry's benchmarks (bench/b*.sh).

Reads one benchmark's records -- JSON lines written by bench/lib.sh's
measure(), each {"what", "round", "cmd", "rc", "r"} with "r" the JSON the
tool printed -- and prints the table: median and range of the runs (so the
machine's noise shows), the ratios, whether the issue's target was met, and
the exact commands that produced the figures.

usage: report.py bN RECORDS.jsonl [the benchmark's parameters...]
"""
import json
import re
import statistics
import sys


def load(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def of(recs, what):
    return [x for x in recs if x["what"] == what]


def completed(rec):
    r = rec["r"] or {}
    return r.get("status", "completed") == "completed" and rec["rc"] == 0


def values(recs, key, only_ok=True):
    return [float(x["r"][key]) for x in recs
            if x["r"] and x["r"].get(key) is not None
            and (completed(x) or not only_ok)]


def med(v):
    return statistics.median(v) if v else None


def num(v, nd=0):
    if v is None:
        return "-"
    return f"{v:,.{nd}f}"


def spread(v, nd=0):
    """(median, "min-max") as strings."""
    if not v:
        return "-", "-"
    return num(med(v), nd), f"{num(min(v), nd)}-{num(max(v), nd)}"


def ratio(a, b, nd=2):
    return f"{a / b:.{nd}f}" if a is not None and b else "-"


def plural(n, word):
    return f"{n} {word}{'' if n == 1 else 's'}"


def table(header, rows):
    """Left-aligned first column, right-aligned others."""
    rows = [[str(c) for c in r] for r in rows]
    w = [max(len(str(h)), *(len(r[i]) for r in rows)) if rows else len(str(h))
         for i, h in enumerate(header)]
    fmt = lambda r: "  ".join(c.ljust(w[0]) if i == 0 else c.rjust(w[i])
                              for i, c in enumerate(r))
    print(fmt([str(h) for h in header]))
    print("  ".join("-" * x for x in w))
    for r in rows:
        print(fmt(r))


def target(text, met):
    print(f"target: {text}: {'met' if met else 'NOT met'}")


def verified_line(recs):
    v = of(recs, "verified")
    if not v:
        return
    r = v[0]["r"] or {}
    ok = r.get("verified") is True
    extra = f", downtime {num(r.get('downtime_ms'), 1)} ms (checks included)" \
        if r.get("downtime_ms") is not None else ""
    err = f" ({r.get('error')})" if r.get("error") else ""
    print(f"verified run: status {r.get('status', 'no report')}, "
          f"verified={str(r.get('verified')).lower()}{extra}{err}"
          f"{'' if ok else '  <-- NOT VERIFIED'}")


def commands(recs):
    seen = []
    for x in recs:
        # qemu-peer.sh gets a fresh free port every run.
        c = re.sub(r"(qemu-peer\.sh \d+ \d+) \d+$", r"\1 PORT", x["cmd"])
        if c not in seen:
            seen.append(c)
    print("commands:")
    for c in seen:
        print(f"  {c}")


def failures(recs):
    bad = [x for x in recs if not completed(x) and x["what"] != "no-auto"]
    for x in bad:
        r = x["r"]
        why = f"{r.get('status')}: {r.get('error')}" if r else "no JSON output"
        print(f"FAILED: {x['what']} #{x['round']}: exit {x['rc']}, {why} "
              f"(see the log)")


def runs_ok(recs):
    return f"{sum(completed(x) for x in recs)}/{len(recs)}"


# --- 1. throughput --------------------------------------------------------

def cc_of(rs):
    """The TCP congestion control the runs report, joined if they differ."""
    seen = sorted({x["r"]["congestion_control"] for x in rs
                   if x["r"] and x["r"].get("congestion_control")})
    return "/".join(seen) or "-"


def b1(recs, mib, backend, sys_cc="unknown"):
    rounds = max((x["round"] for x in recs), default=0)
    print(f"\n== 1. Throughput: {mib} MiB incompressible guest over loopback, "
          f"{plural(rounds, 'round')} interleaved ==")
    print(f"the system's default TCP congestion control: {sys_cc}")
    rows = []
    for n in (1, 2, 4):
        for what, label, ms in ((f"ceiling-{n}", "send/recv ceiling, THP", "ms"),
                                (f"ceilinglw-{n}", "  same, 256 KiB receive mark",
                                 "ms"),
                                (f"ceiling2-{n}", "  same, two processes", "ms"),
                                (f"ferry-{n}", f"ferry, fill guest, {backend}",
                                 "total_ms")):
            if what.startswith(("ceiling2", "ceilinglw")) and not of(recs, what):
                continue
            rs = of(recs, what)
            m, rg = spread(values(rs, "mb_per_s"))
            rows.append([label, n, cc_of(rs), m, rg, num(med(values(rs, ms))),
                         runs_ok(rs)])
    for ch in (1, 4):
        rs = of(recs, f"qemu-{ch}")
        if not rs:
            rows.append([f"QEMU, random RAM{', multifd' if ch > 1 else ''}", ch,
                         "", "skipped", "", "", ""])
            continue
        m, rg = spread(values(rs, "mb_per_s"))
        rows.append([f"QEMU, random RAM{', multifd' if ch > 1 else ''}", ch,
                     sys_cc, m, rg, num(med(values(rs, "total_ms"))), runs_ok(rs)])
    table(["what", "conns", "tcp cc", "MB/s median", "range", "ms median", "ok"],
          rows)
    print()
    rrows, all_met = [], True
    for n in (1, 2, 4):
        f = med(values(of(recs, f"ferry-{n}"), "mb_per_s"))
        # The ceiling is the faster one-process variant, by median.
        c, cw = max((med(values(of(recs, f"{w}-{n}"), "mb_per_s")) or 0, w)
                    for w in ("ceiling", "ceilinglw"))
        per = []
        for rnd in range(1, rounds + 1):
            fv = values([x for x in of(recs, f"ferry-{n}") if x["round"] == rnd], "mb_per_s")
            cv = values([x for x in of(recs, f"{cw}-{n}") if x["round"] == rnd], "mb_per_s")
            if fv and cv:
                per.append(fv[0] / cv[0])
        all_met &= bool(f and c and f / c >= 0.85)
        which = "receive mark" if cw == "ceilinglw" else "per segment"
        rrows.append([f"ferry / ceiling ({which}), {n} conn", ratio(f, c),
                      f"{min(per):.2f}-{max(per):.2f}" if per else "-"])
        c2 = med(values(of(recs, f"ceiling2-{n}"), "mb_per_s"))
        if c2:
            rrows.append([f"  ferry / two-process ceiling, {n} conn",
                          ratio(f, c2), ""])
    fbest = max((med(values(of(recs, f"ferry-{n}"), "mb_per_s")) or 0, n)
                for n in (1, 2, 4))
    qs = [(med(values(of(recs, f"qemu-{ch}"), "mb_per_s")) or 0, ch) for ch in (1, 4)
          if of(recs, f"qemu-{ch}")]
    qbest = max(qs) if qs else None
    if qbest and qbest[0]:
        rrows.append([f"ferry best ({fbest[1]} conn) / QEMU best ({qbest[1]} ch)",
                      ratio(fbest[0], qbest[0]), ""])
    table(["ratio (of medians)", "value", "per round"], rrows)
    for n in (1, 2, 4):
        f, c = cc_of(of(recs, f"ferry-{n}")), cc_of(of(recs, f"ceiling-{n}"))
        if f != c:
            print(f"note: at {n} conn ferry ran under {f}, the ceiling under {c}: "
                  f"not the same rules")
    target("ferry >= 0.85 x the faster ceiling at 1, 2 and 4 connections", all_met)
    if qbest and qbest[0]:
        target("ferry best >= 4 x QEMU best", fbest[0] >= 4 * qbest[0])
    else:
        print("target: ferry best >= 4 x QEMU best: not measured (QEMU skipped or failed)")
    verified_line(recs)
    failures(recs)
    commands(recs)


# --- 2. mostly-zero guest -------------------------------------------------

def b2(recs, mib, backend):
    rs = of(recs, "ferry")
    print(f"\n== 2. Mostly zero guest: {mib} MiB idle, {backend}, "
          f"{len(rs)} runs ==")
    rows = []
    for key, label, nd, scale in (("total_ms", "total_ms", 0, 1),
                                  ("downtime_ms", "downtime_ms", 1, 1),
                                  ("passes", "passes", 0, 1),
                                  ("bytes", "guest MiB moved (bytes)", 0, 1 / 2**20),
                                  ("wire_bytes", "MiB on the wire", 1, 1 / 2**20),
                                  ("mb_per_s", "MB/s (guest RAM / total)", 0, 1)):
        m, rg = spread([v * scale for v in values(rs, key)], nd)
        rows.append([label, m, rg])
    table(["figure", "median", "range"], rows)
    tot = values(rs, "total_ms")
    print(f"runs completed: {runs_ok(rs)}; per run total_ms: "
          + ", ".join(num(v) for v in tot))
    target("total under 1.5 s (every run)",
           bool(tot) and len(tot) == len(rs) and max(tot) < 1500)
    verified_line(recs)
    failures(recs)
    commands(recs)


# --- 3. downtime at 200 MB/s ----------------------------------------------

SPLIT = ("downtime_ms", "final_pass_ms", "state_ms", "switchover_ms")


def b3(recs, mib, rate, limit, backend):
    rs = of(recs, "ferry")
    print(f"\n== 3. Downtime: {mib} MiB random guest dirtying {rate} MB/s, {backend}, "
          f"--downtime-ms {limit}, --no-verify, {len(rs)} runs ==")
    rows = []
    for x in rs:
        r = x["r"] or {}
        rows.append([x["round"], r.get("status", "-"), r.get("passes", "-"),
                     num(r.get("total_ms"))] +
                    [num(r.get(k), 1) for k in SPLIT] + [num(r.get("guest_stall_ms"), 1)])
    table(["run", "status", "passes", "total ms", "downtime", "final pass", "state",
           "switchover", "guest stall"], rows)
    print()
    srows = []
    for k in SPLIT + ("total_ms",):
        v = values(rs, k)
        srows.append([k, num(min(v), 1) if v else "-", num(med(v), 1),
                      num(max(v), 1) if v else "-"])
    table(["figure (ms)", "min", "median", "max"], srows)
    dt = values(rs, "downtime_ms")
    target(f"every run converges with downtime under {limit} ms",
           len(dt) == len(rs) and bool(dt) and max(dt) < float(limit))
    verified_line(recs)
    failures(recs)
    commands(recs)


# --- 4. auto-converge -----------------------------------------------------

def b4(recs, mib, rate, cap, limit_ms):
    print(f"\n== 4. Auto-converge: {mib} MiB random guest dirtying {rate} MB/s over a "
          f"{cap} MB/s cap, precopy limit {int(limit_ms) // 1000} s ==")
    rows, capped = [], True
    for x in recs:
        r = x["r"] or {}
        wire = (r["wire_bytes"] / r["total_ms"] / 1e3
                if r.get("wire_bytes") and r.get("total_ms") else None)
        if wire is not None and wire > 1.1 * float(cap):
            capped = False
        peak = r.get("throttle_peak_pct")
        rows.append([f"{x['what']} #{x['round']}", r.get("status", "-"),
                     num(r.get("total_ms")), r.get("passes", "-"),
                     f"{peak}%" if peak is not None else "n/a",
                     num(r.get("downtime_ms"), 1), num(wire)])
    table(["run", "status", "total ms", "passes", "throttle peak", "downtime ms",
           "wire MB/s"], rows)
    auto = of(recs, "auto")
    no = of(recs, "no-auto")
    if not capped:
        print(f"WARNING: the sender moved more than the {cap} MB/s cap: the engine "
              "ignored --max-bandwidth, so the guest never outran the link and these "
              "runs do not exercise auto-converge.")
    target("with auto-converge every run completes",
           bool(auto) and all(completed(x) for x in auto))
    target("with --no-auto-converge the migration does not converge",
           bool(no) and not any(completed(x) for x in no))
    verified_line(recs)
    failures(recs)
    commands(recs)


# --- 5. compression -------------------------------------------------------

def b5(recs, mib, backend, cap="250"):
    rounds = max((x["round"] for x in recs if x["what"] != "verified"), default=0)
    print(f"\n== 5. Compressible guest: {mib} MiB text guest, {backend}, 1 connection, "
          f"{plural(rounds, 'round')} interleaved; loopback, then a {cap} MB/s link ==")
    rows = []
    for link in ("", f"@{cap}"):
        base_t = med(values(of(recs, "none" + link), "total_ms"))
        base_w = med(values(of(recs, "none" + link), "wire_bytes"))
        for codec in ("none", "lz4", "zstd"):
            rs = of(recs, codec + link)
            if not rs:
                continue
            t = values(rs, "total_ms")
            w = values(rs, "wire_bytes")
            b = values(rs, "bytes")
            m, rg = spread(t)
            rows.append([codec, f"{cap} MB/s" if link else "loopback",
                         num(med(w) / 2**20 if w else None), ratio(med(b), med(w)),
                         m, rg, num(med(values(rs, "mb_per_s"))),
                         ratio(med(t), base_t), ratio(med(w), base_w), runs_ok(rs)])
    table(["codec", "link", "wire MiB", "guest/wire", "total ms", "range", "MB/s guest",
           "time vs none", "wire vs none", "ok"], rows)
    verified_line(recs)
    failures(recs)
    commands(recs)


# --- 6. dirty scan --------------------------------------------------------

REF = {"0%": 16.0, "1%-spread": 380.0}


def b6(recs):
    print("\n== 6. Dirty-bitmap scan: 384 MiB bitmap (12 TiB guest at 4 KiB pages) ==")
    rows = []
    for x in recs:
        r = x["r"]
        ref = REF.get(r["case"]) if r["method"] == "ranges" else None
        rows.append([r["case"], r["method"], f"{r['dirty_bits']:,}", f"{r['ranges']:,}",
                     num(r["median_ms"], 1),
                     f"{num(r['min_ms'], 1)}-{num(r['max_ms'], 1)}",
                     num(ref) if ref else "", ratio(r["median_ms"], ref) if ref else ""])
    table(["case", "method", "dirty pages", "ranges", "median ms", "range ms",
           "reference ms", "ferry/ref"], rows)
    print("reference: a Rust VMM reported 16 ms for the clean bitmap and about 380 ms at 1%.")
    commands(recs)


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    name, recs = sys.argv[1], load(sys.argv[2])
    fn = {"b1": b1, "b2": b2, "b3": b3, "b4": b4, "b5": b5, "b6": b6}.get(name)
    if not fn:
        sys.exit(f"report.py: unknown benchmark {name}")
    if not recs:
        sys.exit(f"report.py: {sys.argv[2]} holds no results")
    fn(recs, *sys.argv[3:])


if __name__ == "__main__":
    main()
