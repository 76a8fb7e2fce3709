#!/usr/bin/env python3
"""The slow and idle clients section (issue 14) from bench/rest_slow.py's JSON results.

    rest_slow.py WORK_DIR OUT.md MODE MACHINE THREADS BUILD_TYPE SCENARIO...

WORK_DIR holds one JSON object per scenario, named SCENARIO.json; the scenarios are those of
SCENARIOS below.
"""
import os
import sys

import common

# Scenario: the server's connection caps, what the attack does.
SCENARIOS = {
    "baseline": ("defaults (512 total, 16 per peer)", "none"),
    "attack": ("defaults (512 total, 16 per peer)", "slow and idle"),
    "attack-open-caps": ("raised (2048 total, 1024 per peer)", "slow and idle"),
}

COLUMNS = [("server caps", "l"), ("attack", "l"), ("attack connections", "r"), ("probes", "r"),
           ("failed", "r"), ("p50 ms", "r"), ("p99 ms", "r"), ("max ms", "r"),
           ("closed by the server", "r")]


def ms(seconds):
    return "-" if seconds is None else f"{seconds * 1000:.1f}"


def render(results, mode, machine, threads, build_type, scenarios):
    first = results[scenarios[0]]
    attacked = [results[name] for name in scenarios if results[name]["connections"] > 0]
    connections = attacked[0]["connections"] if attacked else 0
    drip = attacked[0]["drip_seconds"] if attacked else 2
    lines = [
        "## Slow and idle clients (`onboardctl serve`, issue 14)",
        "",
        machine,
        f"- `onboardctl serve --threads {threads}` ({build_type} build) on 127.0.0.1, plain HTTP,",
        "  default timeouts (head 10 s, keep-alive 5 s). Probe: `bench/rest_slow.py`, GET /healthz",
        f"  from 127.0.0.2 on a new connection per request, one after another for {first['seconds']:g} s",
        f"  per row. Attack: one address (127.0.0.1) keeps {connections} connections open, half sending",
        f"  one byte of an endless request head every {drip:g} s, half idle; a connection the server",
        "  closes (beyond a cap, or past the head deadline) is opened again at the next drip.",
        "- Goal: under the attack every probe is answered, the slowest within 1 s.",
        "",
    ]
    rows = []
    for name in scenarios:
        r = results[name]
        caps, attack = SCENARIOS[name]
        closed = str(r["attack_closed_by_server"]) if "attack_closed_by_server" in r else "-"
        rows.append([caps, attack, str(r["connections"]), str(r["probes"]), str(r["failures"]), ms(r["p50"]),
                     ms(r["p99"]), ms(r["max"]), closed])
    lines += common.table(COLUMNS, rows)
    verdicts = []
    for name in scenarios:
        r = results[name]
        if r["connections"] == 0:
            continue
        met = r["failures"] == 0 and r["max"] is not None and r["max"] < 1.0
        verdicts.append(f"{SCENARIOS[name][0]} caps: {'met' if met else 'NOT met'}")
    if verdicts:
        lines += ["", "- Goal: " + "; ".join(verdicts)]
    if mode == "smoke":
        lines += ["", common.smoke_note("a few seconds per row")]
    return lines


def main(argv):
    work, out, mode, machine, threads, build_type, *scenarios = argv
    results = {name: common.read_json(os.path.join(work, f"{name}.json")) for name in scenarios}
    lines = render(results, mode, machine, threads, build_type, scenarios)
    common.write_lines(out, lines)
    common.echo_tables(lines)


if __name__ == "__main__":
    main(sys.argv[1:])
