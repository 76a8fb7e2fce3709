#!/usr/bin/env python3
"""The issuance section (issue 2) from onboard_issuance_bench's Google Benchmark JSON.

    issuance.py BENCHMARK.json MODE OUT.md MACHINE
"""
import statistics
import sys

import common

TARGET = 0.8
WORK = {"keygen_issue": "key generation + issuance", "csr_issue": "CSR check + issuance"}
# Table order per field: the product's defaults first.
ORDER = (["keygen_issue", "csr_issue"], ["rsa2048", "p256"], ["rsa3072", "p256"])

COLUMNS = [("work", "l"), ("device key", "l"), ("CA key", "l"), ("project certs/s", "r"),
           ("raw certs/s", "r"), ("project/raw", "r"), ("min", "r"), ("max", "r"),
           ("pooled", "r"), ("reps", "r"), ("certs per side", "r"), ("≥ 0.8", "l")]

TEXT = [
    "Certificates per CPU-second of one thread, under a root CA made by `Authority::create` (RSA-3072",
    "is the product's default CA key). Each iteration issues one certificate through the project's",
    "path (`generate_key` or `read_device_csr`, then `Authority::issue` with the device profile: input",
    "checks, six extensions including a CRL URL, signature, PEM, SHA-256 fingerprint) and one through",
    "raw OpenSSL (`EVP_PKEY_Q_keygen`, or PEM parse + `X509_REQ_verify`, then a bare certificate:",
    "serial, names, validity, key, `X509_sign` with the same CA key), alternating which goes first.",
    "project/raw = raw CPU time / project CPU time, per repetition: median, min and max over the",
    "repetitions; *pooled* divides the CPU times summed over all repetitions, the steadier figure",
    "when RSA key generation (60 ms to 1 s per key) dominates. Absolute rates move with the load of",
    "the machine; the ratios, taken from the same seconds, hardly do. Target: project/raw ≥ 0.8.",
]


def parse(name):
    """"work/device:ALG/ca:ALG", plus "/min_time:S" when the benchmark sets its own minimum time:
    (work, device, ca)."""
    fields = name.split("/")
    keys = dict(f.split(":", 1) for f in fields[1:])
    return fields[0], keys["device"], keys["ca"]


def rank(name):
    return [o.index(v) if v in o else len(o) for o, v in zip(ORDER, parse(name))]


def table_rows(runs):
    """(table rows, missed targets) from the repetitions of each benchmark."""
    rows, missed = [], []
    # Repetitions ran randomly interleaved; the table lists the benchmarks in a fixed order.
    for name, reps in sorted(runs.items(), key=lambda item: rank(item[0])):
        work, device, ca = parse(name)
        ratios = [r["ratio"] for r in reps]
        med = statistics.median(ratios)
        pooled = sum(r["raw_cpu_s"] for r in reps) / sum(r["project_cpu_s"] for r in reps)
        certs = sum(int(r["iterations"]) for r in reps)
        met = med >= TARGET
        if not met:
            missed.append(f"{work} {device} key, {ca} CA (median {med:.3f}, {TARGET - med:.3f} short)")
        rows.append([
            WORK.get(work, work), device, ca,
            f"{statistics.median(r['project_per_s'] for r in reps):,.1f}",
            f"{statistics.median(r['raw_per_s'] for r in reps):,.1f}",
            f"**{med:.3f}**", f"{min(ratios):.3f}", f"{max(ratios):.3f}", f"{pooled:.3f}",
            str(len(reps)), str(certs), "yes" if met else "**no**",
        ])
    return rows, missed


def render(data, mode, machine):
    rows, missed = table_rows(common.benchmark_runs(data, "issuance"))
    lines = common.header("Issuance (issue 2)", machine, TEXT)
    lines += [*common.table(COLUMNS, rows), ""]
    if mode == "smoke":
        lines.append(common.smoke_note("one short repetition"))
    elif missed:
        lines.append("Target missed by: " + ", ".join(missed) + ".")
    else:
        lines.append("Target met by every benchmark.")
    return lines


def main(argv):
    path, mode, out, machine = argv
    lines = render(common.read_json(path), mode, machine)
    common.write_lines(out, lines)
    common.echo_tables(lines)


if __name__ == "__main__":
    main(sys.argv[1:])
