#!/usr/bin/env python3
"""The registry-scale section (issue 3) from the timings bench/run's `registry` part records.

    registry.py WORK_DIR MODE OUT.md MACHINE RUNS

WORK_DIR holds three tab-separated files bench/run writes:
  times.tsv  LABEL SET RUN WALL_US CPU_US   one line per timed onboardctl command
  fill.tsv   SET DEVICES REVOKED FILL_US DB_BYTES   one line per registry (small, big, crl)
  crl.tsv    SET RUN CRL_BYTES   the CRL file's size after each timed revocation
"""
import csv
import os
import statistics
import sys

import common

COMMANDS = [
    ("start", "`onboardctl --help` (process start, no registry: the floor)"),
    ("list", "`device list` (first page, 100)"),
    ("list_after", "`device list --after <middle id>`"),
    ("list_all", "`device list --limit 0 --json` (the whole fleet)"),
    ("show", "`device show ID`"),
    ("acl_check", "`acl check ID publish devices/ID/x`"),
    ("register", "`device register` (new P-256 key, P-256 CA)"),
    ("revoke", "`device revoke ID` (CRL rewritten)"),
]

WHY = [
    "",
    "Why (query plans and callgrind; details and fixes in `bench/README.md`): paging, `device",
    "show`, `acl check` and `device register` are indexed lookups and stay flat. `device revoke`",
    "rewrites the CRL from `Store::revoked_certificates()`, which reads the covering partial index",
    "`certificates_revoked` (`WHERE status = 'revoked'`, in CRL order); without it every",
    "revocation scanned the whole certificates table, PEMs included (130 MiB and 129 ms at 100k",
    "devices). What still grows is the CRL itself, re-read, re-encoded and re-signed",
    "on every revocation. `device list --limit 0 --json` is linear by nature, but builds a JSON",
    "document for the whole fleet in memory before printing it (about 50 k instructions per",
    "device); writing each row as it is read would drop about 70 % of that and bound the memory.",
]

med = statistics.median


def wall(values):
    """Median wall time with the fastest run in brackets."""
    return f"{med(values):,.1f} ({min(values):,.1f})"


def render(times_rows, fill_rows, crl_rows, mode, machine, runs):
    """The section's lines from the rows of times.tsv, fill.tsv and crl.tsv (lists of strings)."""
    times, cpu, by_run = {}, {}, {}
    for label, set_, run, us, cpu_us in times_rows:
        times.setdefault((label, set_), []).append(int(us) / 1000.0)
        cpu.setdefault((label, set_), []).append(int(cpu_us) / 1000.0)
        by_run[(label, set_, int(run))] = int(us) / 1000.0
    fill = {r[0]: {"n": int(r[1]), "revoked": int(r[2]), "s": int(r[3]) / 1e6, "bytes": int(r[4])}
            for r in fill_rows}
    crl = {}
    for set_, run, size in crl_rows:
        crl.setdefault(set_, []).append((int(run), int(size)))

    k = common.count_label
    small, big = k(fill["small"]["n"]), k(fill["big"]["n"])
    lines = common.header(f"Registry scale: onboardctl at {small} and {big} devices (issue 3)", machine, [
        f"One `onboardctl` process per measurement (start, open the registry, work, exit), {runs} runs,",
        f"each command run on the {small} and the {big} registry back to back with the order",
        "alternating run by run. *wall* is the median wall-clock time (the fastest run in brackets);",
        f"*{big}/{small}* is the median of the per-run ratios of wall times, each taken from two",
        "runs seconds apart; *CPU* is the median user + system time of the process (1 ms resolution),",
        "which the load of a shared machine disturbs less than wall time, and *CPU above the start*",
        "subtracts the median CPU time of `onboardctl --help` (dynamic linking and building the",
        "command-line parser) to show what the command itself costs. The registries are made by",
        "`onboardctl init --no-group --key-alg p256` and filled by `onboard_registry_bench --fill` (each",
        "device: one certificate with a 1 KiB PEM, ten rules of its own, a type group of two rules;",
        "see `bench/README.md`). Register and revoke change the registry: each run registers a new",
        "device and revokes another one.",
    ])
    columns = [("command", "l"), (f"{small} wall ms", "r"), (f"{big} wall ms", "r"),
               (f"{big}/{small}", "r"), (f"{small} CPU ms", "r"), (f"{big} CPU ms", "r"),
               (f"CPU above the start, {small} → {big}", "r")]
    floor = {set_: med(cpu[("start", set_)]) for set_ in ("small", "big")}
    floor["crl"] = floor["big"]
    rows = []
    for label, title in COMMANDS:
        a, b = times[(label, "small")], times[(label, "big")]
        ratios = [by_run[(label, "big", r)] / by_run[(label, "small", r)] for r in range(1, runs + 1)]
        ca, cb = med(cpu[(label, "small")]), med(cpu[(label, "big")])
        net = "–" if label == "start" else f"{ca - floor['small']:,.1f} → {cb - floor['big']:,.1f}"
        rows.append([title, wall(a), wall(b), f"**{med(ratios):.2f}**", f"{ca:,.1f}", f"{cb:,.1f}", net])
    cc = med(cpu[("revoke", "crl")])
    rows.append([f"`device revoke ID`, {big} devices of which {fill['crl']['revoked']:,} revoked already",
                 "", wall(times[("revoke", "crl")]), "", "", f"{cc:,.1f}", f"→ {cc - floor['crl']:,.1f}"])
    lines += [*common.table(columns, rows), ""]

    notes = []
    for set_ in ("small", "big", "crl"):
        f = fill[set_]
        notes.append(f"{k(f['n'])} devices ({f['revoked']:,} revoked): filled in {f['s']:.1f} s, "
                     f"registry {f['bytes'] / 2**20:,.1f} MiB")
    lines.append("- Registries: " + "; ".join(notes) + ".")
    # CRL sizes after the first and the last timed revocation.
    first, last = sorted(crl["big"])[0][1], sorted(crl["big"])[-1][1]
    per_entry = (last - first) / (runs - 1) if runs > 1 else float("nan")
    long_last = sorted(crl["crl"])[-1][1]
    crl_entries = fill["crl"]["revoked"] + runs
    lines.append(
        f"- CRL file (PEM): {first:,} bytes with 1 revoked certificate, {last:,} with {runs}"
        + (f" (≈ {per_entry:.0f} bytes per entry)" if runs > 1 else "")
        + f"; {long_last:,} bytes with {crl_entries:,} entries "
        f"({(long_last - first) / (crl_entries - 1):.0f} bytes per entry). "
        "Every revocation re-reads every revoked certificate and re-signs the whole list.")
    lines += WHY
    if mode == "smoke":
        lines += ["", common.smoke_note("tiny registries and one run")]
    return lines


def read_tsv(work, name):
    with open(os.path.join(work, name)) as f:
        return list(csv.reader(f, delimiter="\t"))


def main(argv):
    work, mode, out, machine, runs = argv
    lines = render(read_tsv(work, "times.tsv"), read_tsv(work, "fill.tsv"), read_tsv(work, "crl.tsv"),
                   mode, machine, int(runs))
    common.write_lines(out, lines)
    common.echo_tables(lines)


if __name__ == "__main__":
    main(sys.argv[1:])
