#!/usr/bin/env python3
"""Tables for ferry's benchmarks (bench/b*.sh).

Reads one benchmark's records -- JSON lines written by bench/lib.sh's
measure(), each {"what", "round", "cmd", "rc", "r"} with "r" the JSON the
tool printed -- and prints the table: median and range of the runs (so the
machine's noise shows), the ratios, whether the issue's target was met, and
the exact commands that produced the figures.

"The default is what we measure": benchmarks 1 to 4 run ferry with the
defaults (the "defaults" rows: what a user types) and with the best
setting (the "best" rows) in one run, side by side; the settings of both
come from the records' {"meta": {...}} line (bench/lib.sh's settings()).

usage: report.py bN RECORDS.jsonl [the benchmark's parameters...]
"""
import json
import re
import statistics
import sys


META = {}

# The rows every benchmark with defaults and best setting has.
ROWS = (("defaults", "ferry, defaults"),
        ("best", "ferry, best setting"),
        ("noverify", "ferry, defaults + --no-verify"))


def load(path):
    """The measurements; the meta lines go to META."""
    recs = []
    with open(path) as f:
        for line in f:
            if not line.strip():
                continue
            x = json.loads(line)
            if "meta" in x:
                META.update(x["meta"])
            else:
                recs.append(x)
    return recs


def settings():
    """What "defaults" and "best" mean in this run."""
    print(f"defaults: no --memory-backend (ferry-vm's default: "
          f"{META.get('default_backend', '?')}), verification on, the rest as "
          f"a user types it")
    if META.get("best"):
        print(f"best setting: {META['best']} ({META.get('best_why', '')})")


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


def verified_of(rs):
    """How many of the runs verified, "off" when none checked."""
    checked = [x for x in rs if x["r"] and x["r"].get("verified") is not None]
    if not checked and all(x["r"] for x in rs):
        return "off"
    return f"{sum(x['r'].get('verified') is True for x in checked)}/{len(rs)}"


def verified_target(recs, row="defaults"):
    """Every run of ROW (the defaults: they check the guest) must verify."""
    rs = [x for x in recs if x["what"] == row or x["what"].startswith(row + "-")]
    if not rs:
        return
    target(f"every {row} run verifies the guest ({verified_of(rs)})",
           all(x["r"] and x["r"].get("verified") is True for x in rs))


# Rows of one benchmark only.
LABELS = {"no-auto": "ferry, defaults + --no-auto-converge",
          "ceiling": "send/recv ceiling",
          "ceilinglw": "send/recv ceiling, 256 KiB receive mark",
          "ceiling2": "send/recv ceiling, two processes",
          "qemu": "QEMU"}


def label(what):
    """A row's name as its table prints it ("defaults-2": "ferry, defaults,
    2 conn")."""
    key, _, n = what.rpartition("-")
    if not n.isdigit():
        key, n = what, ""
    text = LABELS.get(key) or dict(ROWS).get(key)
    if not text:
        return what
    return f"{text}, {n} {'ch' if key == 'qemu' else 'conn'}" if n else text


def commands(recs):
    """Each row's exact command, once (round numbers and ports aside)."""
    seen = []
    for x in recs:
        # qemu-peer.sh gets a fresh free port every run.
        c = re.sub(r"(qemu-peer\.sh \d+ \d+) \d+$", r"\1 PORT", x["cmd"])
        c = re.sub(r"(qemu-postcopy\.sh \d+ \w+ \d+) \d+", r"\1 PORT", c)
        if (x["what"], c) not in seen:
            seen.append((x["what"], c))
    print("commands (each row):")
    w = max(len(label(what)) for what, _ in seen)
    for what, c in seen:
        print(f"  {label(what).ljust(w)}  {c}")


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


FERRY_ROWS = (("defaults", "ferry, defaults"), ("best", "ferry, best setting"))


def per_round(recs, a, b, rounds):
    """The ratios a / b of each round where both ran."""
    per = []
    for rnd in range(1, rounds + 1):
        av = values([x for x in of(recs, a) if x["round"] == rnd], "mb_per_s")
        bv = values([x for x in of(recs, b) if x["round"] == rnd], "mb_per_s")
        if av and bv:
            per.append(av[0] / bv[0])
    return f"{min(per):.2f}-{max(per):.2f}" if per else "-"


def b1(recs, mib, sys_cc="unknown"):
    rounds = max((x["round"] for x in recs), default=0)
    qrounds = max((x["round"] for x in recs if x["what"].startswith("qemu")),
                  default=0)
    print(f"\n== 1. Throughput: {mib} MiB incompressible guest over loopback, "
          f"{plural(rounds, 'round')} interleaved (QEMU in "
          f"{plural(qrounds, 'round')}) ==")
    settings()
    print(f"the system's default TCP congestion control: {sys_cc}")
    rows = []
    for n in (1, 2, 4):
        for what, text, ms in ((f"ceiling-{n}", "send/recv ceiling, THP", "ms"),
                               (f"ceilinglw-{n}", "  same, 256 KiB receive mark", "ms"),
                               (f"ceiling2-{n}", "  same, two processes", "ms"),
                               (f"defaults-{n}", "ferry, defaults", "total_ms"),
                               (f"best-{n}", "ferry, best setting", "total_ms")):
            rs = of(recs, what)
            if not rs:
                continue
            m, rg = spread(values(rs, "mb_per_s"))
            rows.append([text, n, cc_of(rs), m, rg, num(med(values(rs, ms))),
                         runs_ok(rs), verified_of(rs) if what[0] in "db" else ""])
    for ch in (1, 4):
        rs = of(recs, f"qemu-{ch}")
        text = f"QEMU, random RAM{', multifd' if ch > 1 else ''}"
        if not rs:
            rows.append([text, ch, "", "skipped", "", "", "", ""])
            continue
        m, rg = spread(values(rs, "mb_per_s"))
        rows.append([text, ch, sys_cc, m, rg, num(med(values(rs, "total_ms"))),
                     runs_ok(rs), ""])
    table(["what", "conns", "tcp cc", "MB/s median", "range", "ms median", "ok",
           "verified"], rows)
    print()
    qs = [(med(values(of(recs, f"qemu-{ch}"), "mb_per_s")) or 0, ch) for ch in (1, 4)
          if of(recs, f"qemu-{ch}")]
    qbest = max(qs) if qs else None
    rrows, met = [], {}
    for key, text in FERRY_ROWS:
        met[key] = True
        for n in (1, 2, 4):
            f = med(values(of(recs, f"{key}-{n}"), "mb_per_s"))
            # The ceiling is the faster one-process variant, by median.
            c, cw = max((med(values(of(recs, f"{w}-{n}"), "mb_per_s")) or 0, w)
                        for w in ("ceiling", "ceilinglw"))
            met[key] &= bool(f and c and f / c >= 0.85)
            which = "receive mark" if cw == "ceilinglw" else "per segment"
            rrows.append([f"{text} / ceiling ({which}), {n} conn", ratio(f, c),
                          per_round(recs, f"{key}-{n}", f"{cw}-{n}", rounds)])
            c2 = med(values(of(recs, f"ceiling2-{n}"), "mb_per_s"))
            if c2:
                rrows.append([f"  {text} / two-process ceiling, {n} conn",
                              ratio(f, c2), ""])
        fbest = max((med(values(of(recs, f"{key}-{n}"), "mb_per_s")) or 0, n)
                    for n in (1, 2, 4))
        if qbest and qbest[0]:
            rrows.append([f"{text}, fastest count ({fbest[1]} conn) / QEMU best "
                          f"({qbest[1]} ch)", ratio(fbest[0], qbest[0]), ""])
            met[key + "-qemu"] = fbest[0] >= 4 * qbest[0]
    for n in (1, 2, 4):
        rrows.append([f"defaults / best setting, {n} conn",
                      ratio(med(values(of(recs, f"defaults-{n}"), "mb_per_s")),
                            med(values(of(recs, f"best-{n}"), "mb_per_s"))),
                      per_round(recs, f"defaults-{n}", f"best-{n}", rounds)])
    table(["ratio (of medians)", "value", "per round"], rrows)
    for n in (1, 2, 4):
        c = cc_of(of(recs, f"ceiling-{n}"))
        for key, text in FERRY_ROWS:
            f = cc_of(of(recs, f"{key}-{n}"))
            if f not in (c, "-"):
                print(f"note: at {n} conn {text} ran under {f}, the ceiling under "
                      f"{c}: not the same rules")
    for key, text in FERRY_ROWS:
        target(f"{text}: >= 0.85 x the faster ceiling at 1, 2 and 4 connections",
               met[key])
        if key + "-qemu" in met:
            target(f"{text}: fastest count >= 4 x QEMU best", met[key + "-qemu"])
        else:
            print(f"target: {text}: fastest count >= 4 x QEMU best: not measured "
                  "(QEMU skipped or failed)")
    verified_target(recs)
    failures(recs)
    commands(recs)


# --- 2. mostly-zero guest -------------------------------------------------

def rows_of(recs):
    """The (key, label, records) of each ferry row that ran."""
    return [(k, t, of(recs, k)) for k, t in ROWS if of(recs, k)]


def b2(recs, mib):
    rows = rows_of(recs)
    n = max((len(rs) for _, _, rs in rows), default=0)
    print(f"\n== 2. Mostly zero guest: {mib} MiB idle, {plural(n, 'run')} of each "
          f"row, interleaved ==")
    settings()
    out = []
    for key, text, nd, scale in (("total_ms", "total_ms", 0, 1),
                                 ("downtime_ms", "downtime_ms", 1, 1),
                                 ("verify_ms", "checks in the pause, ms", 1, 1),
                                 ("passes", "passes", 0, 1),
                                 ("bytes", "guest MiB moved (bytes)", 0, 1 / 2**20),
                                 ("wire_bytes", "MiB on the wire", 1, 1 / 2**20),
                                 ("mb_per_s", "MB/s (guest RAM / total)", 0, 1)):
        line = [text]
        for _, _, rs in rows:
            line += spread([v * scale for v in values(rs, key)], nd)
        out.append(line)
    out.append(["runs completed"] + sum(([runs_ok(rs), ""] for _, _, rs in rows), []))
    out.append(["verified"] + sum(([verified_of(rs), ""] for _, _, rs in rows), []))
    table(["figure"] + sum(([f"{k}: median", "range"] for k, _, _ in rows), []), out)
    for key, text, rs in rows:
        tot = values(rs, "total_ms")
        print(f"{text}: total_ms per run: " + ", ".join(num(v) for v in tot))
        target(f"{text}: total under 1.5 s (every run)",
               bool(tot) and len(tot) == len(rs) and max(tot) < 1500)
    verified_target(recs)
    failures(recs)
    commands(recs)


# --- 3. downtime at 200 MB/s ----------------------------------------------

SPLIT = ("downtime_ms", "final_pass_ms", "state_ms", "verify_ms", "switchover_ms")


def b3(recs, mib, rate, limit):
    rows = rows_of(recs)
    n = max((len(rs) for _, _, rs in rows), default=0)
    print(f"\n== 3. Downtime: {mib} MiB random guest dirtying {rate} MB/s, "
          f"--downtime-ms {limit}, {plural(n, 'run')} of each row, interleaved ==")
    settings()
    out = []
    for key, text, rs in rows:
        for x in rs:
            r = x["r"] or {}
            ver = r.get("verified")
            out.append([key, x["round"], r.get("status", "-"), r.get("passes", "-"),
                        num(r.get("total_ms"))] +
                       [num(r.get(k), 1) for k in SPLIT] +
                       [num(r.get("guest_stall_ms"), 1),
                        "off" if ver is None else str(ver).lower()])
    table(["row", "run", "status", "passes", "total ms", "downtime", "final pass",
           "state", "(checks)", "switchover", "guest stall", "verified"], out)
    print("(checks): ferry-vm's digests and page checks inside the pause, part of "
          "the state")
    print()
    srows = []
    for k in SPLIT + ("total_ms",):
        srows.append([k] + sum((list(spread(values(rs, k), 1)) for _, _, rs in rows),
                               []))
    table(["figure (ms)"] + sum(([f"{key}: median", "min-max"] for key, _, _ in rows),
                                []), srows)
    for key, text, rs in rows:
        dt = values(rs, "downtime_ms")
        target(f"{text}: every run converges with downtime under {limit} ms",
               len(dt) == len(rs) and bool(dt) and max(dt) < float(limit))
    # The issue's rule: the defaults' pause within 1 ms (or 5%) of the same
    # runs without verification; "noverify" is those runs when the best
    # setting also changes the backing.
    d = med(values(of(recs, "defaults"), "downtime_ms"))
    ref = "noverify" if of(recs, "noverify") else "best"
    b = med(values(of(recs, ref), "downtime_ms"))
    if d is not None and b is not None:
        target(f"defaults' median downtime within 1 ms or 5% of {label(ref)} "
               f"({num(d, 1)} against {num(b, 1)} ms)",
               d - b <= max(1.0, 0.05 * b))
    verified_target(recs)
    failures(recs)
    commands(recs)


# --- 4. auto-converge -----------------------------------------------------

def b4(recs, mib, rate, cap, limit_ms):
    print(f"\n== 4. Auto-converge: {mib} MiB random guest dirtying {rate} MB/s over a "
          f"{cap} MB/s cap, precopy limit {int(limit_ms) // 1000} s ==")
    settings()
    print("contrast (no-auto): the defaults with --no-auto-converge")
    rows, capped = [], True
    for x in recs:
        r = x["r"] or {}
        wire = (r["wire_bytes"] / r["total_ms"] / 1e3
                if r.get("wire_bytes") and r.get("total_ms") else None)
        if wire is not None and wire > 1.1 * float(cap):
            capped = False
        peak = r.get("throttle_peak_pct")
        ver = r.get("verified") if completed(x) else None
        rows.append([f"{x['what']} #{x['round']}", r.get("status", "-"),
                     num(r.get("total_ms")), r.get("passes", "-"),
                     f"{peak}%" if peak is not None else "n/a",
                     num(r.get("downtime_ms"), 1), num(r.get("verify_ms"), 1),
                     num(wire), str(ver).lower() if ver is not None else
                     "off" if completed(x) else "-"])
    table(["run", "status", "total ms", "passes", "throttle peak", "downtime ms",
           "(checks) ms", "wire MB/s", "verified"], rows)
    no = of(recs, "no-auto")
    if not capped:
        print(f"WARNING: the sender moved more than the {cap} MB/s cap: the engine "
              "ignored --max-bandwidth, so the guest never outran the link and these "
              "runs do not exercise auto-converge.")
    for key, text, rs in rows_of(recs):
        target(f"{text}: with auto-converge every run completes",
               all(completed(x) for x in rs))
    target("with --no-auto-converge the migration does not converge",
           bool(no) and not any(completed(x) for x in no))
    verified_target(recs)
    failures(recs)
    commands(recs)


# --- 5. compression -------------------------------------------------------

def b5(recs, mib, cap="250"):
    rounds = max((x["round"] for x in recs), default=0)
    print(f"\n== 5. Compressible guest: {mib} MiB text guest, 1 connection, "
          f"{plural(rounds, 'round')} interleaved; loopback, then a {cap} MB/s link ==")
    backing = f"--memory-backend {META['backend']}" if META.get("backend") else \
        f"no --memory-backend (ferry-vm's default: {META.get('default_backend', '?')})"
    print(f"about a setting, the codec (default none): every row runs on the "
          f"defaults otherwise: {backing}, verification on")
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
                         ratio(med(t), base_t), ratio(med(w), base_w),
                         num(med(values(rs, "downtime_ms")), 1), runs_ok(rs),
                         verified_of(rs)])
    table(["codec", "link", "wire MiB", "guest/wire", "total ms", "range", "MB/s guest",
           "time vs none", "wire vs none", "downtime ms", "ok", "verified"], rows)
    target(f"every run verifies the guest ({verified_of(recs)})",
           all(x["r"] and x["r"].get("verified") is True for x in recs))
    failures(recs)
    commands(recs)


# --- 6. dirty scan --------------------------------------------------------

REF = {"0%": 16.0, "1%-spread": 380.0}


def b6(recs):
    print("\n== 6. Dirty-bitmap scan: 384 MiB bitmap (12 TiB guest at 4 KiB pages) ==")
    print("no defaults or best rows: a micro-benchmark of one library function, "
          "with no setting a user chooses")
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

# --- 8. live snapshots ----------------------------------------------------

SNAP_ROWS = (("ferry", "ferry snapshot (live)"),
             ("dd-direct", "dd oflag=direct conv=fsync"),
             ("dd-fsync", "dd buffered, conv=fsync"),
             ("qemu-exec", "QEMU exec:cat, paused guest"),
             ("qemu-background-snapshot", "QEMU background-snapshot"),
             ("qemu-mapped-ram", "QEMU file: + mapped-ram"))


def rate_of(rec):
    """Bytes written per second of the file (MB/s): ferry's file bytes
    over its total time, dd's and QEMU's own figure."""
    r = rec["r"] or {}
    v = r.get("file_mb_per_s", r.get("mb_per_s"))
    return float(v) if v is not None and completed(rec) else None


def rates(rs):
    return [v for v in map(rate_of, rs) if v is not None]


def round_ratios(a, b):
    """Per-round ratios rate(a) / rate(b) of the rounds where both ran."""
    per = []
    for x in a:
        y = [z for z in b if z["round"] == x["round"]]
        if y and rate_of(x) and rate_of(y[0]):
            per.append(rate_of(x) / rate_of(y[0]))
    return per


def qemu_probe(recs):
    p = [x["r"] for x in of(recs, "qemu-probe") if x["r"]]
    if not p:
        print("QEMU: not run")
        return
    p = p[0]
    print(f"QEMU {p.get('qemu_version')}: mapped-ram capability "
          f"{'present' if p.get('mapped_ram') else 'absent (added in QEMU 9.0)'} "
          f"in query-migrate-capabilities; migrate to a file: URI "
          f"{'accepted' if p.get('file_uri') else 'refused (added in QEMU 8.2): ' + str(p.get('file_uri_error'))}")


def snap_verified(rs):
    """"checkpoint" when no run compared the guest with the file (its
    guest ran on), else how many verified."""
    if all(x["r"] and (x["r"].get("verify") or {}).get("method") == "off" for x in rs):
        return "checkpoint"
    return verified_of(rs)


def b8(recs):
    sizes = META.get("sizes", "").split()
    rounds = max((x["round"] for x in recs), default=0)
    print(f"\n== 8. Live snapshot into a file: random guest writing "
          f"{META.get('rate', '?')} MB/s, {' '.join(sizes)}, "
          f"{plural(rounds, 'round')} ==")
    print(f"file system: {META.get('snap_fs', '?')} ({META.get('snap_dir', '?')})")
    print(f"ferry-vm's defaults (backing {META.get('default_backend', '?')}, "
          "verification on); dd from random data in /dev/shm, 1 MiB blocks, the "
          "snapshot's size; QEMU: TCG, RAM of random data")
    qemu_probe(recs)
    rows, rrows, met = [], [], {}
    for size in sizes:
        if META.get(f"skip_{size}"):
            rows.append([size, "skipped: " + META[f"skip_{size}"]] + [""] * 11)
            continue
        ram = float(int(size[:-1]) << (30 if size[-1] == "G" else 20))
        for key, text in SNAP_ROWS:
            rs = of(recs, f"{key}-{size}")
            if not rs:
                continue
            ok = [x for x in rs if completed(x)]
            fb = [float(x["r"]["file_bytes"]) for x in ok if x["r"].get("file_bytes")]
            fa = [float(x["r"]["file_alloc_bytes"]) for x in ok
                  if x["r"].get("file_alloc_bytes")]
            m, rg = spread(rates(rs))
            pm, prg = spread(values(rs, "downtime_ms"), 1)
            tm, trg = spread(values(rs, "total_ms"))
            rows.append([size, text, runs_ok(rs), pm, prg, tm, trg,
                         num(med(values(rs, "passes"))) if key == "ferry" else "",
                         ratio(med(fb), ram, 3) if fb and ram and key != "dd-direct"
                         and key != "dd-fsync" else "",
                         ratio(med(fa), ram, 3) if fa and ram else "", m, rg,
                         snap_verified(rs) if key == "ferry" else ""])
        f = of(recs, f"ferry-{size}")
        for key in ("dd-direct", "dd-fsync", "qemu-exec", "qemu-background-snapshot",
                    "qemu-mapped-ram"):
            d = of(recs, f"{key}-{size}")
            if not f or not d:
                continue
            per = round_ratios(f, d)
            rrows.append([f"{size}: ferry / {key}", ratio(med(rates(f)), med(rates(d))),
                          f"{min(per):.2f}-{max(per):.2f}" if per else "-"])
            if key == "dd-direct":
                r = med(rates(f)) / med(rates(d)) if rates(f) and rates(d) else 0
                met[f"{size} write throughput >= 0.8 x dd oflag=direct"] = r >= 0.8
        if f:
            ok = [x for x in f if completed(x)]
            sz = [x["r"]["file_bytes"] / x["r"]["ram_bytes"] for x in ok
                  if x["r"].get("file_bytes") and x["r"].get("ram_bytes")]
            met[f"{size} file <= 1.05 x RAM (every run)"] = \
                bool(sz) and len(sz) == len(f) and max(sz) <= 1.05
            if size in ("1G", "1024M"):
                dt = values(f, "downtime_ms")
                met[f"{size} pause <= 50 ms (every run)"] = \
                    bool(dt) and len(dt) == len(f) and max(dt) <= 50
    table(["size", "what", "ok", "pause ms", "range", "total ms", "range", "passes",
           "file/RAM", "alloc/RAM", "MB/s", "range", "verified"], rows)
    print("pause: downtime_ms (QEMU: its downtime); MB/s: file bytes / total time; "
          "alloc: blocks the file system allocated; verified: a checkpoint's guest "
          "runs on, so its RAM is not compared with the file (benchmark 9's restores "
          "verify the files)")
    q = [x for x in recs if x["what"].startswith("qemu-") and x["what"] != "qemu-probe"
         and completed(x)]
    if q:
        print("QEMU's sync after the save (it does not flush the file), ms: " +
              ", ".join(f"{x['what']} #{x['round']} {num(x['r'].get('sync_ms'))}"
                        for x in q))
    print()
    if rrows:
        table(["write throughput ratio (of medians)", "value", "per round"], rrows)
    for text, ok in met.items():
        target(text, ok)
    for k, v in META.items():
        if k.startswith("fail_"):
            print(f"FAILED: {k[5:]}: {v}")
    failures(recs)
    commands(recs)

# --- 9. restore -----------------------------------------------------------

def eng(rec, key):
    """A figure of the engine's, from the restore's `ferry status`."""
    r = rec["r"] or {}
    v = (r.get("migration") or {}).get(key)
    return float(v) if v is not None and completed(rec) else None


def restore_rate(rec):
    r = rec["r"] or {}
    v = r.get("restore_mb_per_s", r.get("mb_per_s"))
    return float(v) if v is not None and completed(rec) else None


def b9(recs):
    sizes = META.get("sizes", "").split()
    rounds = max((x["round"] for x in recs), default=0)
    print(f"\n== 9. Restore from a snapshot file: random guest written at "
          f"{META.get('rate', '?')} MB/s, {' '.join(sizes)}, "
          f"{plural(rounds, 'round')} ==")
    print(f"file system: {META.get('snap_fs', '?')}; page cache: {META.get('caches', '?')}; "
          f"each measurement after {META.get('settle_s', '?')} s of quiet (free page reporting "
          f"order {META.get('page_reporting_order', '?')}: the host takes freed memory back)")
    rows, lrows, rrows, met = [], [], [], {}
    for size in sizes:
        if META.get(f"skip_{size}"):
            rows.append([size, "skipped: " + META[f"skip_{size}"]] + [""] * 9)
            continue
        snap = [x["r"] for x in of(recs, f"snapshot-{size}") if x["r"]]
        fb = snap[0].get("file_bytes") if snap else None
        dd = of(recs, f"dd-read-{size}")
        ceiling = of(recs, f"fresh-read-{size}")
        for what, text in ((dd, "dd iflag=direct"),
                           (of(recs, f"fresh-mem-{size}"), "fresh memory, populated"),
                           (ceiling, "file read into fresh memory")):
            if what:
                m, rg = spread([v for v in map(restore_rate, what) if v is not None])
                tm, trg = spread(values(what, "total_ms"))
                rows.append([size, text, runs_ok(what), "", "", tm, trg, "", m, rg, ""])
        for mode, text in (("eager", "full restore"), ("eager-hugetlb", "full restore, hugetlb pool"),
                           ("lazy", "lazy restore")):
            rs = of(recs, f"{mode}-{size}")
            if not rs:
                continue
            run, runrg = spread(values(rs, "running_ms"), 1)
            allin, allrg = spread(values(rs, "all_in_ms"))
            et = med([v for v in (eng(x, "total_ms") for x in rs) if v is not None])
            m, rg = spread([v for v in map(restore_rate, rs) if v is not None])
            rows.append([size, text, runs_ok(rs), run, runrg, allin, allrg, num(et), m, rg,
                         verified_of(rs)])
            a = med([v for v in map(restore_rate, rs) if v is not None])
            for base, btext in ((dd, "dd iflag=direct"), (ceiling, "file read into fresh memory")):
                if not base or (mode == "lazy" and base is ceiling):
                    continue
                per = []
                for x in rs:
                    y = [z for z in base if z["round"] == x["round"]]
                    if y and restore_rate(x) and restore_rate(y[0]):
                        per.append(restore_rate(x) / restore_rate(y[0]))
                b = med([v for v in map(restore_rate, base) if v is not None])
                rrows.append([f"{size}: {text} / {btext}", ratio(a, b),
                              f"{min(per):.2f}-{max(per):.2f}" if per else "-"])
                if mode.startswith("eager") and base is dd:
                    met[f"{size} {text} throughput >= 0.8 x dd iflag=direct"] = \
                        bool(a and b and a / b >= 0.8)
            if mode == "lazy":
                line = [size, num(med(values(rs, "page_faults")))]
                for k in ("page_wait_p50_ms", "page_wait_p99_ms", "page_wait_max_ms"):
                    line += spread(values(rs, k), 3)
                line += [num(med(values(rs, "lazy_complete_ms")))]
                lrows.append(line)
                t = values(rs, "running_ms")
                if size in ("8G", "8192M"):
                    met[f"{size} lazy restore: guest running <= 100 ms after the "
                        f"process start (every run)"] = \
                        bool(t) and len(t) == len(rs) and max(t) <= 100
        if fb:
            print(f"{size}: snapshot file {fb / 2**20:,.0f} MiB")
        if META.get(f"skip_hugetlb_{size}"):
            print(f"{size}: hugetlb row skipped: {META[f'skip_hugetlb_{size}']}")
    table(["size", "what", "ok", "running ms", "range", "all in ms", "range",
           "engine total ms", "MB/s", "range", "verified"], rows)
    print("running / all in: from the process start to the first status whose guest "
          "runs / has every page (dd, freshmem: their time); MB/s: file bytes / all in "
          "(dd, freshmem: their own); hugetlb pool: --memory-backend hugetlb from a pool "
          "reserved before the rounds, whose pages the host keeps backing")
    if lrows:
        print()
        table(["size", "page faults", "wait p50 ms", "range", "p99 ms", "range",
               "max ms", "range", "lazy_complete_ms"], lrows)
    print()
    if rrows:
        table(["throughput ratio (of medians)", "value", "per round"], rrows)
    for text, ok in met.items():
        target(text, ok)
    failures(recs)
    commands(recs)

# --- 10. postcopy ---------------------------------------------------------

PC_ROWS = (("precopy", "ferry, precopy alone (--no-auto-converge)"),
           ("autoconverge", "ferry, auto-converge (the defaults)"),
           ("postcopy", "ferry, --postcopy"),
           ("qemu-precopy", "QEMU, precopy"),
           ("qemu-autoconverge", "QEMU, auto-converge"),
           ("qemu-postcopy", "QEMU, postcopy-ram"))


# Figures the destination measures best: postcopy_ms from the switch to
# its last page placed (the source's ends at the answer to POSTCOPY_END,
# which waits for the destination's background verification too).
DST_FIRST = ("postcopy_ms",)


def pc(rec, key):
    """A postcopy figure of one run: the source's report, else the
    destination's word (bench/pair-migrate.sh's "destination"), the other
    way round for DST_FIRST. Fault waits in microseconds, from the
    page_wait_*_ms names as well."""
    r = rec["r"] or {}
    d = r.get("destination") or {}
    for src in ((d, r) if key in DST_FIRST else (r, d)):
        if src.get(key) is not None:
            return float(src[key])
    alias = {"faults": ("page_faults", 1), "fault_p50_us": ("page_wait_p50_ms", 1e3),
             "fault_p99_us": ("page_wait_p99_ms", 1e3),
             "fault_max_us": ("page_wait_max_ms", 1e3)}.get(key)
    if alias:
        for src in (r, d):
            if src.get(alias[0]) is not None:
                return float(src[alias[0]]) * alias[1]
    return None


def pcs(rs, key):
    return [v for v in (pc(x, key) for x in rs if completed(x)) if v is not None]


def all_in(rec):
    """Milliseconds from the start to the last page at the destination:
    the source's total_ms, which after a postcopy ends at the
    destination's last page placed (include/ferry.h)."""
    r = rec["r"] or {}
    if r.get("total_ms") is None:
        return None
    return float(r["total_ms"])


def all_ins(rs, only_ok=True):
    return [v for v in (all_in(x) for x in rs if completed(x) or not only_ok)
            if v is not None]


def outcome(rs):
    """What the runs ended as: "completed 3/3", or the statuses."""
    st = [(x["r"] or {}).get("status", "no report") for x in rs]
    if all(s == "completed" for s in st):
        return f"completed {len(st)}/{len(st)}"
    return ", ".join(f"{s} {st.count(s)}/{len(st)}" for s in dict.fromkeys(st))


def with_range(v, nd=0):
    m, rg = spread(v, nd)
    return m if len(v) < 2 else f"{m} ({rg})"


def b10_part1(recs):
    mib, cap = int(META.get("ram_mib", 0)), float(META.get("cap", 0))
    one = mib * 1048576 / 1e6 / cap * 1e3 if cap else None  # RAM / bandwidth, ms
    rows = []
    for key, text in PC_ROWS:
        rs = of(recs, key)
        if not rs:
            continue
        q = key.startswith("qemu")
        # Every run's time, the failed ones too: the outcome says how it
        # ended. Postcopy: to the last page placed (all_in).
        tot = values(rs, "total_ms", only_ok=False) if q else all_ins(rs, False)
        wire = [float(x["r"]["transferred_mb"]) if q else float(x["r"]["wire_bytes"]) / 1e6
                for x in rs if x["r"] and x["r"].get("transferred_mb" if q else "wire_bytes") is not None]
        peak = values(rs, "throttle_pct" if q else "throttle_peak_pct", only_ok=False)
        rows.append([text, outcome(rs), with_range(tot),
                     ratio(med(values(rs, "total_ms") if q else all_ins(rs)), one),
                     with_range(values(rs, "downtime_ms"), 1),
                     f"{num(max(peak))}%" if peak else "n/a",
                     num(med(values(rs, "passes", only_ok=False))), num(med(wire)),
                     with_range(pcs(rs, "postcopy_ms")) if not q else
                     with_range([float(x["r"]["total_ms"]) - float(x["r"]["switch_ms"])
                                 for x in rs if completed(x) and x["r"].get("switch_ms")
                                 and x["r"].get("total_ms")]),
                     num(med(pcs(rs, "faults"))) if not q else "n/a",
                     with_range(pcs(rs, "fault_p50_us")) if not q else "n/a",
                     with_range(pcs(rs, "fault_p99_us")) if not q else "n/a",
                     num(med(pcs(rs, "pages_requested"))) if not q else "n/a",
                     num(med(pcs(rs, "pages_pushed"))) if not q else "n/a",
                     verified_of(rs) if not q else "n/a"])
    print(f"\n== 10.1 Postcopy: {mib} MiB random guest writing {META.get('rate')} MB/s "
          f"over a {cap:.0f} MB/s cap, precopy limit "
          f"{int(META.get('limit_ms', 0)) // 1000} s ==")
    print(f"memory backing: ferry-vm's default ({META.get('default_backend', '?')}), "
          "verification on; total ms: the report's total_ms, to the migration's "
          "end (after a postcopy: to the destination's last page); RAM / bandwidth = "
          f"{num(one)} ms; QEMU: TCG, the ab boot-sector guest (writes one byte "
          "per 4 KiB page over half its RAM, as fast as TCG runs; the other half "
          "stays zero, which QEMU sends as zero pages), same RAM and cap; "
          "wire MB: ferry's wire_bytes, QEMU's ram.transferred")
    for k in ("skip_postcopy", "skip_qemu"):
        if META.get(k):
            print(f"left out: {META[k]}")
    if rows:
        table(["row", "outcome", "total ms (to the last page)", "/ (RAM/bw)", "downtime ms",
               "throttle peak", "passes", "wire MB", "postcopy ms", "faults", "fault p50 us",
               "fault p99 us", "pages requested", "pages pushed", "verified"], rows)
    bt = [float(x["r"]["blocktime_ms"]) for x in of(recs, "qemu-postcopy")
          if x["r"] and x["r"].get("blocktime_ms") is not None]
    if bt:
        print(f"QEMU postcopy-blocktime (total vCPU wait at the destination): "
              f"{with_range(bt)} ms")
    p = of(recs, "postcopy")
    if p and one:
        lim = 1.2 * one + 1000
        t = all_ins(p)
        target(f"postcopy total <= 1.2 x RAM / bandwidth + 1 s = {num(lim)} ms "
               f"(median {num(med(t))} ms, {ratio(med(t), one)} x RAM / bandwidth)",
               bool(t) and len(t) == len(p) and med(t) <= lim)
    pre = of(recs, "precopy")
    if pre:
        target("precopy alone does not converge", not any(completed(x) for x in pre))
    for key in ("autoconverge", "postcopy"):
        if of(recs, key):
            target(f"{key}: every run completes and verifies ({verified_of(of(recs, key))})",
                   all(completed(x) and x["r"].get("verified") is True
                       for x in of(recs, key)))


def b10_part2(recs, what="latency"):
    rs = of(recs, what)
    poll = f", ferry-vm --lane-poll-us {what[len('latency-poll'):]}" \
        if what.startswith("latency-poll") else ""
    print(f"\n== 10.2 Fault latency on loopback: {META.get('lat_ram_mib')} MiB random "
          f"guest writing {META.get('lat_rate')} MB/s, --postcopy-after-passes 1, "
          f"no cap{poll}, {plural(len(rs), 'round')} ==")
    if not rs:
        print("not run" + (f": {META['skip_postcopy']}" if META.get("skip_postcopy") else ""))
        return
    rows = [[f"#{x['round']}", (x["r"] or {}).get("status", "no report"),
             num(pc(x, "total_ms")), num(pc(x, "postcopy_ms")),
             num(pc(x, "faults")),
             num(pc(x, "fault_p50_us")), num(pc(x, "fault_p99_us")),
             num(pc(x, "fault_max_us")), num(pc(x, "pages_requested")),
             num(pc(x, "pages_pushed")),
             str((x["r"] or {}).get("verified")).lower()] for x in rs]
    rows.append(["median (range)", outcome(rs), with_range(pcs(rs, "total_ms")),
                 with_range(pcs(rs, "postcopy_ms")),
                 with_range(pcs(rs, "faults")),
                 with_range(pcs(rs, "fault_p50_us")), with_range(pcs(rs, "fault_p99_us")),
                 with_range(pcs(rs, "fault_max_us")),
                 with_range(pcs(rs, "pages_requested")), with_range(pcs(rs, "pages_pushed")),
                 verified_of(rs)])
    print("total ms: the report's total_ms, from the start to the destination's last "
          "page placed; postcopy ms: from the switch to that page")
    table(["run", "status", "total ms", "postcopy ms", "faults", "fault p50 us",
           "fault p99 us", "fault max us", "pages requested", "pages pushed",
           "verified"], rows)
    p50, p99 = pcs(rs, "fault_p50_us"), pcs(rs, "fault_p99_us")
    target(f"fault p50 <= 100 us (median {num(med(p50))})",
           bool(p50) and len(p50) == len(rs) and med(p50) <= 100)
    target(f"fault p99 <= 1 ms (median {num(med(p99))} us)",
           bool(p99) and len(p99) == len(rs) and med(p99) <= 1000)
    target(f"every run completes and verifies ({verified_of(rs)})",
           all(completed(x) and x["r"].get("verified") is True for x in rs))


def b10(recs):
    b10_part1(recs)
    lat = [w for w in dict.fromkeys(x["what"] for x in recs)
           if w.startswith("latency-poll")]
    for w in lat or ["latency"]:
        b10_part2(recs, w)
    for x in recs:
        if not completed(x) and x["what"] not in ("precopy", "qemu-precopy"):
            r = x["r"]
            why = f"{r.get('status')}: {r.get('error') or 'no error given'}" if r \
                else "no JSON output"
            print(f"not completed: {x['what']} #{x['round']}: exit {x['rc']}, {why} "
                  "(see the log)")
    commands(recs)


# --- 12. local migration by memory fds -------------------------------------

def b12(recs):
    """Downtime and wire bytes: local (fds) against copy, per backing and
    size."""
    print(f"Benchmark 12: local migration by memory fds against a copying "
          f"migration, `random` guest at {META.get('rate', '?')} MB/s, "
          f"verification on, over a UNIX socket")
    groups = []
    for x in recs:
        mode, _, rest = x["what"].partition("-")
        backing, _, size = rest.partition("-")
        if (backing, size) not in [(b, z) for b, z, _ in groups]:
            groups.append((backing, size, []))
    rows = []
    for backing, size, _ in groups:
        for mode in ("local", "copy"):
            rs = of(recs, f"{mode}-{backing}-{size}")
            if not rs:
                if mode == "copy" and META.get(f"skip_copy_{backing}_{size}"):
                    rows.append([backing, size, "copy", "-", "-", "-", "-", "-",
                                 "not run: RAM twice does not fit"])
                continue
            dt, dtr = spread(values(rs, "downtime_ms"), 1)
            wb = values(rs, "wire_bytes")
            tot, _ = spread(values(rs, "total_ms"), 0)
            passes = values(rs, "passes")
            rows.append([backing, size, mode, dt, dtr,
                         num(med(wb) / 2**20, 3) if wb else "-", tot,
                         num(med(passes)) if passes else "-",
                         f"{runs_ok(rs)} ok, {verified_of(rs)} verified"])
    table(["backing", "size", "memory", "downtime ms", "range",
           "wire MiB", "total ms", "passes", "runs"], rows)
    for k, v in META.items():
        if k.startswith("skip_") and not k.startswith("skip_copy_"):
            print(f"skipped {k[5:]}: {v}")
    loc = [x for x in recs if x["what"].startswith("local-")]
    if loc:
        worst = max(values(loc, "downtime_ms") or [0])
        target(f"a local migration pauses the guest <= 5 ms (worst run "
               f"{worst:.1f} ms)", all(completed(x) for x in loc) and worst <= 5)
        wb = max(values(loc, "wire_bytes") or [0])
        target(f"a local migration sends no memory (at most {wb / 1024:.1f} KiB "
               f"on the wire, whatever the size)", wb < 1 << 20)
    verified_target(recs, "local")
    failures(recs)
    commands(recs)


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    name, recs = sys.argv[1], load(sys.argv[2])
    fn = {"b1": b1, "b2": b2, "b3": b3, "b4": b4, "b5": b5, "b6": b6,
          "b8": b8, "b9": b9, "b10": b10, "b12": b12}.get(name)
    if not fn:
        sys.exit(f"report.py: unknown benchmark {name}")
    if not recs:
        sys.exit(f"report.py: {sys.argv[2]} holds no results")
    fn(recs, *sys.argv[3:])


if __name__ == "__main__":
    main()
