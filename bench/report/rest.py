#!/usr/bin/env python3
"""The REST server section (issue 6) from onboard_rest_bench's JSON results.

    rest.py WORK_DIR OUT.md MODE MACHINE SECONDS THREADS CA...

WORK_DIR holds one JSON object per run, named register-CA.json, read-CA.json and
read-close-CA.json for each CA key algorithm.
"""
import os
import sys

import common

# File name prefix, request, connection: one table row each, per CA.
RUNS = (("register", "register (CSR)", "keep-alive"),
        ("read", "GET device", "keep-alive"),
        ("read-close", "GET device", "new per request"))

COLUMNS = [("CA key", "l"), ("request", "l"), ("connection", "l"), ("requests/s", "r"),
           ("p50 ms", "r"), ("p99 ms", "r"), ("requests", "r"), ("errors", "r")]


def result_row(ca, label, connection, r):
    """One table row from one onboard_rest_bench result object."""
    return [ca, label, connection, f"{r['per_second']:.0f}", f"{r['p50_us'] / 1000:.2f}",
            f"{r['p99_us'] / 1000:.2f}", str(r["requests"]), str(r["errors"])]


def render(results, mode, machine, seconds, threads, cas):
    """RESULTS maps (run name, CA) to the result object onboard_rest_bench printed."""
    lines = [
        "## REST server (`onboardctl serve`, issue 6)",
        "",
        machine,
        f"- Load: `onboard_rest_bench`, {threads} client threads for {seconds} s per row, against",
        f"  `onboardctl serve --threads {threads}` on 127.0.0.1 (TCP_NODELAY on both sides); a fresh",
        "  registry per CA. Register: POST /v1/devices with a P-256 CSR made beforehand (CSR check,",
        "  issuance, one SQLite write transaction with its audit row). Read: GET /v1/devices/<id>",
        "  (device, certificates, effective rules, held key: one token lookup and four reads).",
        "",
    ]
    rows = [result_row(ca, label, connection, results[(name, ca)])
            for ca in cas for name, label, connection in RUNS]
    lines += common.table(COLUMNS, rows)
    if mode == "smoke":
        lines += ["", common.smoke_note("half a second per row")]
    return lines


def main(argv):
    work, out, mode, machine, seconds, threads, *cas = argv
    results = {(name, ca): common.read_json(os.path.join(work, f"{name}-{ca}.json"))
               for ca in cas for name, _, _ in RUNS}
    lines = render(results, mode, machine, seconds, threads, cas)
    common.write_lines(out, lines)
    common.echo_tables(lines)


if __name__ == "__main__":
    main(sys.argv[1:])
