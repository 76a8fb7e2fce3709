#!/usr/bin/env python3
"""The decision-cost and snapshot-scale section (issue 7) from onboard_registry_bench's Google
Benchmark JSON.

    decisions.py BENCHMARK.json MODE OUT.md MACHINE ARGS [IMG_DIR]

ARGS is the benchmark's command line as bench/run ran it, quoted in the section. The plot of ns per
decision by fleet size goes to IMG_DIR (default: the repository's docs/img, beside
docs/benchmarks.md); a smoke run plots beside OUT.md and shows no plot.
"""
import os
import statistics
import sys

import broker
import common

SCALE = {"ns": 1.0, "us": 1e3, "ms": 1e6, "s": 1e9}

# name, title, field, unit divisor (from ns), unit
ROWS = [
    ("build_pure", "`Snapshot::build` from values in memory", "real_time", 1e6, "ms"),
    ("load_sqlite", "`load_snapshot` from SQLite (read_access + build)", "real_time", 1e6, "ms"),
    ("check_access", "one ACL decision, on a random device of all", "cpu_time", 1.0, "ns"),
    ("check_access_hot", "one ACL decision, on 256 active devices", "cpu_time", 1.0, "ns"),
    ("connect_verdict", "one connect verdict", "cpu_time", 1.0, "ns"),
    ("with_changes", "next snapshot with one device changed (`with_changes`)", "real_time", 1e3, "µs"),
    ("refresh_sqlite", "one registry change picked up end to end (`refresh_snapshot`)", "real_time", 1e3, "µs"),
    ("client_decide_10k", "plugin's decision for a connected device, random of 10k connected, no kept answer",
     "cpu_time", 1.0, "ns"),
    ("client_decide_100k", "plugin's decision for a connected device, random of 100k connected, no kept answer",
     "cpu_time", 1.0, "ns"),
    ("client_decide_kept_10k", "the same, random of 10k connected, the kept answer", "cpu_time", 1.0, "ns"),
    ("client_decide_kept_100k", "the same, random of 100k connected, the kept answer", "cpu_time", 1.0, "ns"),
    ("client_rebind_100k", "a connected device's first decision after a swap (rules brought up to date), of 100k",
     "cpu_time", 1.0, "ns"),
    ("clients_rebind_100k", "every one of 100k connected clients' rules brought up to date after a swap, in all",
     "real_time", 1e6, "ms"),
    ("snapshot_swap_100k", "snapshot swap on the broker's thread (take + replace), 100k connected",
     "real_time", 1e3, "µs"),
]
# name, counter, title, unit
COUNTERS = [
    ("build_pure", "rss_added_MiB", "memory added by `build`", "MiB"),
    ("build_pure", "bytes_per_device", "memory added per device", "bytes"),
    ("load_sqlite", "rss_added_MiB", "memory added by `load_snapshot`", "MiB"),
    ("with_changes", "release_us", "freeing the replaced snapshot", "µs"),
    ("client_decide_10k", "rss_per_client", "plugin memory per connected client, 10k connected (resident)",
     "bytes"),
    ("client_decide_100k", "rss_per_client", "plugin memory per connected client, 100k connected (resident)",
     "bytes"),
    ("client_decide_100k", "heap_per_client",
     "the same as `AcceptedClients::heap_bytes` counts it, 100k connected", "bytes"),
    ("clients_rebind_100k", "per_client_ns", "every one of 100k connected clients' rules brought up to date, per client",
     "ns"),
    ("clients_rebind_100k", "extra_per_client_ns",
     "the same beyond reading each client's binding (the same round without a swap)", "ns"),
    ("clients_rebind_100k", "rebound_per_swap", "of which bound again (their device's shard changed)",
     "clients"),
    ("clients_rebind_100k", "rebind_us_per_swap", "the time those took, in all", "µs"),
]

# The plot's series: benchmark, title (ns per decision, CPU time).
PLOT_SERIES = [
    ("check_access", "Snapshot::check_access, random device of all"),
    ("check_access_hot", "Snapshot::check_access, 256 active devices"),
    ("client_decide_10k", "plugin, random of 10k connected"),
    ("client_decide_100k", "plugin, random of 100k connected"),
    ("client_decide_kept_10k", "plugin, 10k connected, kept answer"),
    ("client_decide_kept_100k", "plugin, 100k connected, kept answer"),
]
TARGET_NS = 150
PLOT_NAME = "decisions-ns"
PLOT_SCRIPT = """
set logscale x
set logscale y
set xrange [{xmin}:{xmax}]
set xtics ({xtics})
set xlabel 'devices in the registry'
set ylabel 'ns per decision (CPU time, median)'
set grid
set key below horizontal maxrows 3 noenhanced
set title 'One ACL decision by fleet size (target: {target} ns at any size)' noenhanced
plot {series}, {target} with lines dt 2 lc rgb 'red' title 'target {target} ns'
"""

WHY_MISSED = [
    "",
    "Why the missed targets are missed (see `bench/README.md`): a decision on cached data costs",
    "about 1,280 instructions at any size (callgrind at 1k; 1,684 before each rule's first level got",
    "a tag in its pattern pointer, so that rules that start otherwise than the topic are passed",
    "over unread, and the topic was split in one pass; 3,565 before rule patterns were split into",
    "levels once and shared), about 120 to 200 ns on this VM, so the hot row sits at or near the",
    "target and varies with the machine's load; on a random device of a large fleet each decision also",
    "waits for the walk to the device (shard slot, then the device record with its rules) out of",
    "memory, which is the difference between the two decision rows. Memory: about 390 bytes a",
    "device (`SnapshotDevice`: one allocation per device, 360 bytes, 368 with malloc's; of it 240",
    "for ten 24-byte `acl::Rule`s whose patterns are shared, 56 for the certificate with its",
    "fingerprint as 32 bytes, 16 of header and 48 for the status, id, type and packed serial with",
    "their padding), and about 20 for the two index slots; the tags took no byte of it. Build and",
    "change times are wall time and move with the load average given above.",
    "",
    "The plugin's own path for a connected device (`client_decide_*`: `AcceptedClients` finds the",
    "client by the broker's pointer and compares its client id and username with the broker's",
    "strings, then its `ClientRules`, bound at its first check after the connect and again only",
    "after a swap that changed its device's shard or the groups, decide) costs about 1,100",
    "instructions when the answer is not the kept one (callgrind, 10k of 100k",
    "connected; 1,600 before the tags and the one-pass split). Of them `ClientRules::check` 840, of",
    "it `acl::evaluate` 700 with the levels of the two or three rules that can apply compared,",
    "about 155, the topic split and validated once, about 110, and a subscribe filter's interpreted",
    "walk, about 1,000 for the one decision in ten that is a subscribe; the client's lookup and the",
    "id compares about 190. The",
    "device's own ten rules stay with their `%d` (compiled, they would take about 1,100 bytes a",
    "client against the 512-byte budget; only the default group's rule is compiled). With 10k or",
    "100k clients at random the entry, the broker's two strings, the kept topic and the device",
    "record with its rules are out of the caches on every call (a broker has the client's strings",
    "and the topic in cache: it has just read its packet), which is the difference between the",
    "10k and the 100k rows. The kept answer skips the evaluation: one lookup and three `strcmp`.",
    "So 150 ns for any connected device is not reached: it needs fewer instructions still (the",
    "subscribe path on split levels, the group rules in the device's list) and, above all, fewer",
    "dependent loads per client (the entry, its strings and the rules in fewer cache lines).",
    "Memory per connected client is the resident set that accepting and binding the clients added",
    "(each asked once, so its kept topic is held), over the clients; `AcceptedClients::heap_bytes`",
    "counts the same with 16 bytes of malloc overhead per allocation; the tags and the binding's",
    "usability bits took no byte of it.",
    "A swap on the broker's thread is `Handover::take`, a pointer store, and a comparison of the",
    "new snapshot's 4096 device shards with the old one's by address, and of the groups by serial",
    "(`SnapshotChanges`: per shard, the generation that last changed it or the groups). A binding",
    "answers only while its shard's generation is the one it was made with, one compare per",
    "decision: after a change to one device only the clients of that device's shard (1 in 4096)",
    "bind again at their next decision (one device lookup finds the same record unless it was",
    "theirs), and every other binding stays current with no work at all (`clients_rebind_*`: the",
    "round after a swap costs what the same round without one does). So one change costs the",
    "broker thread the swap and those few bindings, which the last target line adds up.",
]


def run_key(b):
    """"check_access/1000", without Google Benchmark's "/iterations:1/repeats:3/manual_time"."""
    return "/".join(b["run_name"].split("/")[:2])


def ns(b, field):
    return b[field] * SCALE[b["time_unit"]]


def fmt(v):
    """Three significant figures or so: 1,234 / 56.7 / 8.90; "–" for no value."""
    if v is None:
        return "–"
    return f"{v:,.0f}" if v >= 100 else f"{v:,.2f}" if v < 10 else f"{v:,.1f}"


class Runs:
    """Medians over the repetitions of each benchmark."""

    def __init__(self, data):
        self.runs = common.benchmark_runs(data, "decisions", run_key)
        self.sizes = sorted({int(name.split("/")[1]) for name in self.runs})

    def value(self, name, field, div):
        reps = self.runs.get(name)
        if not reps:
            return None
        return statistics.median(ns(r, field) for r in reps) / div

    def counter(self, name, c):
        reps = self.runs.get(name)
        if not reps or c not in reps[0]:
            return None
        return statistics.median(r[c] for r in reps)


def target_checks(runs):
    """Issue 7's targets, read at the largest size measured."""
    top = runs.sizes[-1]
    k = common.count_label(top)
    checks = []

    def target(desc, v, limit, unit, stated=None):
        if v is None:
            return
        verdict = "met" if v <= limit else f"**missed by {v - limit:,.1f} {unit}**"
        checks.append(f"{desc} at {k}: {fmt(v)} {unit} (target ≤ {stated or f'{limit:g} {unit}'}) {verdict}")

    target("ACL decision (random device)", runs.value(f"check_access/{top}", "cpu_time", 1.0), 150, "ns")
    target("ACL decision (256 active devices)", runs.value(f"check_access_hot/{top}", "cpu_time", 1.0),
           150, "ns")
    target("snapshot build", runs.value(f"build_pure/{top}", "real_time", 1e9), 5, "s")
    target("snapshot memory", runs.counter(f"build_pure/{top}", "rss_added_MiB"), 400 * 1e6 / 2**20, "MiB",
           "400 MB = 381.5 MiB")
    target("one change applied", runs.value(f"with_changes/{top}", "real_time", 1e6), 1, "ms")
    for c in ("10k", "100k"):
        target(f"plugin's decision for a connected device (random of {c} connected, no kept answer)",
               runs.value(f"client_decide_{c}/{top}", "cpu_time", 1.0), 150, "ns")
        target(f"plugin's decision for a connected device (random of {c} connected, kept answer)",
               runs.value(f"client_decide_kept_{c}/{top}", "cpu_time", 1.0), 150, "ns")
    target("plugin memory per connected client (100k connected, resident)",
           runs.counter(f"client_decide_100k/{top}", "rss_per_client"), 512, "bytes")
    swap = runs.value(f"snapshot_swap_100k/{top}", "real_time", 1e3)
    target("one registry change applied on the broker's thread: the swap (100k connected)", swap, 50, "µs")
    rebind = runs.counter(f"clients_rebind_100k/{top}", "rebind_us_per_swap")
    if swap is not None and rebind is not None:
        target("the same with the bindings it makes stale bound again (100k connected, each at its next "
               "decision)", swap + rebind, 50, "µs")
    return checks


def plot_rows(runs):
    """One row per fleet size: the size, then each series' ns ("NaN" where it was not run, which
    gnuplot leaves out)."""
    rows = []
    for n in runs.sizes:
        values = [runs.value(f"{key}/{n}", "cpu_time", 1.0) for key, _ in PLOT_SERIES]
        rows.append([n, *("NaN" if v is None else f"{v:.1f}" for v in values)])
    return rows


def decision_plot(runs, img_dir, notes):
    """The plot's Markdown line, or None (see broker.plot)."""
    series = ", ".join(f"datafile using 1:{2 + i} with linespoints lw 2 title '{title}'"
                       for i, (_, title) in enumerate(PLOT_SERIES))
    xtics = ", ".join(f"'{common.count_label(n)}' {n}" for n in runs.sizes)
    script = PLOT_SCRIPT.format(xmin=runs.sizes[0] / 2, xmax=runs.sizes[-1] * 2, xtics=xtics,
                                target=TARGET_NS, series=series)
    return broker.plot(img_dir, PLOT_NAME, plot_rows(runs), script, notes)


def render(data, mode, machine, args, img_dir=None):
    """The section's lines; with img_dir, the plot is written there and shown (not in smoke mode,
    whose plot is only made)."""
    runs = Runs(data)
    sizes = runs.sizes
    lines = common.header("Decision cost and snapshot scale (issue 7)", machine, [
        "Google Benchmark (`onboard_registry_bench " + args + "`), every device with ten rules of its",
        "own and one certificate, ten type groups of two rules and the default group's one rule (a",
        "decision weighs thirteen rules). Medians over repetitions; ACL decisions and connect verdicts",
        "are mean CPU time per call, cycling through 8,192 prepared queries (a mix of allowed, denied",
        "and unmatched topics) on random devices of the whole fleet, or of 256 of them (a broker whose",
        "traffic comes from a few hundred devices at a time). Memory is the resident set the snapshot",
        "added. The plugin's rows (issue 15) run its own path for 10k and 100k connected devices of",
        "the fleet, each decision on a random one of them, every answer checked against",
        "`Snapshot::check_access` before timing; the swap is timed alone, and the rebinds after it",
        "both within a client's next decision and for all the clients in one round.",
    ])
    columns = [("measure", "l"), ("unit", "l"), *((common.count_label(n), "r") for n in sizes)]
    rows = [[title, unit, *(fmt(runs.value(f"{key}/{n}", field, div)) for n in sizes)]
            for key, title, field, div, unit in ROWS]
    rows += [[title, unit, *(fmt(runs.counter(f"{key}/{n}", c)) for n in sizes)]
             for key, c, title, unit in COUNTERS]
    lines += [*common.table(columns, rows), ""]
    if img_dir is not None and sizes:
        notes = []
        img = decision_plot(runs, img_dir, notes)
        if mode != "smoke":
            lines += [img, ""] if img else [*notes, ""]

    checks = [] if mode == "smoke" else target_checks(runs)
    if mode != "smoke" and sizes[-1] < 1_000_000:
        lines.append(f"Issue 7's targets are set at 1M devices; this run stopped at "
                     f"{common.count_label(sizes[-1])}.")
    lines += [f"- {c}" for c in checks]
    if checks:
        lines += WHY_MISSED
    if mode == "smoke":
        lines += ["", common.smoke_note("one size, minimal time")]
    return lines


def main(argv):
    path, mode, out, machine, args, *rest = argv
    docs_img = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "docs", "img")
    img_dir = rest[0] if rest else docs_img
    if mode == "smoke":
        img_dir = os.path.dirname(os.path.abspath(out))
    lines = render(common.read_json(path), mode, machine, args, img_dir)
    common.write_lines(out, lines)
    common.echo_tables(lines)


if __name__ == "__main__":
    main(sys.argv[1:])
