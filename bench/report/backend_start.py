#!/usr/bin/env python3
"""The backend_start section: broker start time and snapshot memory on SQLite and PostgreSQL.

    backend_start.py DIR MODE OUT.md MACHINE SIZES RUNS

SIZES is a comma-separated list of device counts. DIR/starts.tsv has one line per broker start:
SET (BACKEND-DEVICES), RUN, MICROSECONDS from starting mosquitto to its listener accepting a
connection, VmRSS and VmHWM (the peak) in KiB once the plugin has read its registry.
"""
import os
import sys

import common


def read_starts(path):
    """({set: [(start seconds, rss KiB, peak KiB), ...]}, {set: failed starts}) from starts.tsv."""
    starts, failed = {}, {}
    with open(path) as f:
        for line in f:
            name, _run, us, rss, peak = line.split()
            if us == "failed":
                failed[name] = failed.get(name, 0) + 1
            else:
                starts.setdefault(name, []).append((int(us) / 1e6, int(rss), int(peak)))
    return starts, failed


def section(directory, mode, machine, sizes, runs):
    starts, failed = read_starts(os.path.join(directory, "starts.tsv"))
    counts = " and ".join(f"{int(n):,}" for n in sizes)
    lines = common.header("Broker start and snapshot memory: SQLite and PostgreSQL", machine, [
        f"Registries of {counts} devices filled by `onboard_registry_bench --fill` (SQLite, raw INSERTs;",
        "every device with its certificate and ten rules of its own, ten type groups), whose device,",
        "certificate, group and rule rows are then copied as they are into a PostgreSQL registry",
        "(`sqlite3 -csv` into `psql \\copy`, on a throwaway `tests/support/pg_cluster` cluster), so both",
        "hold the same rows; beside each an empty registry of the same backend. A broker with the",
        "plugin (the PostgreSQL ones as the read-only broker role) is started on each in turn,",
        f"{runs} rounds: *start* is the time from starting mosquitto until its listener accepts a TCP",
        "connection, polled every 50 ms (the plugin reads its snapshot on its own thread, after init; RSS is taken once that read is in);",
        "*RSS* is the broker's VmRSS then and *peak* its VmHWM (the most it held while",
        "building the snapshot); *snapshot memory* is RSS with the devices minus RSS on the empty",
        "registry of the same backend. Medians over rounds (min–max).",
    ])
    rows = []
    medians = {}
    for backend, title in (("sqlite", "SQLite"), ("postgresql", "PostgreSQL")):
        for n in ("0", *sizes):
            values = starts.get(f"{backend}-{n}", [])
            failures = failed.get(f"{backend}-{n}", 0)
            if not values and not failures:
                continue
            secs = [s for s, _, _ in values]
            rss = [r / 1024 for _, r, _ in values]
            peak = [p / 1024 for _, _, p in values]
            if values:
                medians[(backend, n)] = (common.median(secs), common.median(rss), common.median(peak))
                rows.append([title, f"{int(n):,}", f"{common.median(secs):.2f} ({min(secs):.2f}–{max(secs):.2f})",
                             f"{common.median(rss):.1f} ({min(rss):.1f}–{max(rss):.1f})",
                             f"{common.median(peak):.1f}", str(failures)])
            else:
                rows.append([title, f"{int(n):,}", "–", "–", "–", str(failures)])
    lines += [*common.table([("registry", "l"), ("devices", "r"), ("start s", "r"), ("RSS MiB", "r"),
                             ("peak MiB", "r"), ("failed starts", "r")], rows), ""]
    for n in sizes:
        for backend, title in (("sqlite", "SQLite"), ("postgresql", "PostgreSQL")):
            if (backend, "0") in medians and (backend, n) in medians:
                extra = medians[(backend, n)][1] - medians[(backend, "0")][1]
                lines.append(f"- {title}: snapshot memory at {int(n):,} devices {extra:.1f} MiB "
                             f"({extra * 1024 * 1024 / int(n):,.0f} bytes per device); start "
                             f"{medians[(backend, n)][0]:.2f} s")
        if ("sqlite", n) in medians and ("postgresql", n) in medians:
            s_start, s_rss, _ = medians[("sqlite", n)]
            p_start, p_rss, _ = medians[("postgresql", n)]
            lines.append(f"- PostgreSQL beside SQLite at {int(n):,} devices: start ×{p_start / s_start:.2f}, "
                         f"RSS ×{p_rss / s_rss:.2f}")
        for backend in ("sqlite", "postgresql"):
            path = os.path.join(directory, f"{backend}-{n}-counts")
            if os.path.exists(path):
                with open(path) as f:
                    rows_in = f.read().strip().replace("|", " ")
                lines.append(f"- rows in the {backend} registry of {int(n):,} devices "
                             f"(devices, certificates, rules): {rows_in}")
    if mode == "smoke":
        lines += ["", common.smoke_note("tiny and short")]
    return lines


def main():
    directory, mode, out, machine, sizes, runs = sys.argv[1:]
    lines = section(directory, mode, machine, sizes.split(","), runs)
    with open(out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines), file=sys.stderr)


if __name__ == "__main__":
    main()
