#!/usr/bin/env python3
"""The REST server section (issue 6) from onboard_rest_bench's JSON results.

    rest.py WORK_DIR OUT.md MODE MACHINE SECONDS THREADS SETUP...

A SETUP is CA-BACKEND: the CA's key algorithm and the registry's backend (sqlite, postgresql).
WORK_DIR holds one JSON object per run, named register-SETUP.json, read-SETUP.json and
read-close-SETUP.json.
"""
import os
import sys

import common

# File name prefix, request, connection: one table row each, per set-up.
RUNS = (("register", "register (CSR)", "keep-alive"),
        ("read", "GET device", "keep-alive"),
        ("read-close", "GET device", "new per request"))

COLUMNS = [("CA key", "l"), ("registry", "l"), ("request", "l"), ("connection", "l"), ("requests/s", "r"),
           ("p50 ms", "r"), ("p99 ms", "r"), ("requests", "r"), ("errors", "r")]


BACKENDS = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}


def result_row(setup, label, connection, r):
    """One table row from one onboard_rest_bench result object."""
    ca, backend = setup.rsplit("-", 1)
    return [ca, BACKENDS[backend], label, connection, f"{r['per_second']:.0f}", f"{r['p50_us'] / 1000:.2f}",
            f"{r['p99_us'] / 1000:.2f}", str(r["requests"]), str(r["errors"])]


def render(results, mode, machine, seconds, threads, setups):
    """RESULTS maps (run name, set-up) to the result object onboard_rest_bench printed."""
    lines = [
        "## REST server (`onboardctl serve`, issue 6)",
        "",
        machine,
        f"- Load: `onboard_rest_bench`, {threads} client threads for {seconds} s per row, against",
        f"  `onboardctl serve --threads {threads}` on 127.0.0.1 (TCP_NODELAY on both sides); a fresh",
        "  registry per set-up: an SQLite file, or a database on a throwaway PostgreSQL 15 cluster",
        "  on the same machine (`tests/support/pg_cluster`, reached over TCP on 127.0.0.1).",
        "  Register: POST /v1/devices with a P-256 CSR made beforehand (CSR check, issuance, one",
        "  write transaction with its audit row). Read: GET /v1/devices/<id> (device, certificates,",
        "  effective rules, held key: one token lookup and four reads).",
        "",
    ]
    rows = [result_row(setup, label, connection, results[(name, setup)])
            for setup in setups for name, label, connection in RUNS]
    lines += common.table(COLUMNS, rows)
    for ca in sorted({setup.rsplit("-", 1)[0] for setup in setups}):
        if f"{ca}-sqlite" in setups and f"{ca}-postgresql" in setups:
            ratios = ", ".join(
                f"{label} ({connection}) ×{results[(name, ca + '-postgresql')]['per_second'] / results[(name, ca + '-sqlite')]['per_second']:.2f}"
                for name, label, connection in RUNS)
            lines += ["", f"- PostgreSQL beside SQLite ({ca} CA), requests/s: {ratios}"]
    if mode == "smoke":
        lines += ["", common.smoke_note("half a second per row")]
    return lines


def main(argv):
    work, out, mode, machine, seconds, threads, *setups = argv
    results = {(name, setup): common.read_json(os.path.join(work, f"{name}-{setup}.json"))
               for setup in setups for name, _, _ in RUNS}
    lines = render(results, mode, machine, seconds, threads, setups)
    common.write_lines(out, lines)
    common.echo_tables(lines)


if __name__ == "__main__":
    main(sys.argv[1:])
