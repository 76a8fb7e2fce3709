#!/usr/bin/env python3
"""The provisioning section: devices enrolling themselves over MQTT, beside raw issuance.

    provision.py PROVISION.json REGISTER.json MODE MACHINE OUT.md [COMMITS]

PROVISION.json: onboard_loadgen provision's JSON lines (its "summary"); REGISTER.json:
onboard_rest_bench --mode register's result object against the same `onboardctl serve`.
COMMITS: what serve logged at its stop about the group commit ("N recorded in M commit(s), the
largest of K"), when it did.
"""
import json
import sys

GOAL_P99_MS = 500


def summary(path):
    """The loadgen's summary object."""
    with open(path) as lines:
        for line in lines:
            record = json.loads(line)
            if record.get("type") == "summary":
                return record
    raise SystemExit(f"provision.py: no summary in {path}")


def render(enrol, raw, mode, machine, commits=""):
    p99 = enrol["claim_to_certificate_ms_p99"]
    verdict = "met" if p99 <= GOAL_P99_MS else f"missed by {p99 - GOAL_P99_MS:.0f} ms"
    ratio = enrol["enrolments_per_s"] / raw["per_second"] if raw["per_second"] else 0
    return "\n".join([
        "## Devices enrolling themselves over MQTT",
        "",
        machine,
        f"- Load: `onboard_loadgen provision`, {enrol['devices']} devices at once, each with a new "
        "P-256 key, connecting with one claim's certificate (v3.1.1, mTLS) and publishing its CSR "
        "as soon as it is connected; `onboardctl serve` (8 threads, P-256 CA, SQLite; enrolments "
        "waiting for the write turn together share one commit) signs, the plugin sends 8 requests "
        "at a time (`plugin_opt_provision_workers 8`). Raw issuance: `onboard_rest_bench --mode "
        "register` (P-256 CSRs, 4 keep-alive threads) against the same server, after the "
        "enrolments.",
        "",
        "| measure | value |",
        "|---|---:|",
        f"| devices enrolled / rejected / refused at connect / no answer | {enrol['accepted']} / "
        f"{enrol['rejected']} / {enrol['refused']} / {enrol['timed_out']} |",
        f"| connect (start to CONNACK: the TLS handshake and the connect check), p50 / p99 | "
        f"{enrol.get('connect_ms_p50', 0):.1f} / {enrol.get('connect_ms_p99', 0):.1f} ms |",
        f"| claim to certificate (connect start to answer), p50 | {enrol['claim_to_certificate_ms_p50']:.1f} ms |",
        f"| claim to certificate, p99 (goal ≤ {GOAL_P99_MS} ms: {verdict}) | {p99:.1f} ms |",
        f"| request to answer (CSR published to answer), p50 / p99 | "
        f"{enrol['request_to_answer_ms_p50']:.1f} / {enrol['request_to_answer_ms_p99']:.1f} ms |",
        f"| enrolments/s (first connect to last answer, {enrol['seconds']:.2f} s) | "
        f"{enrol['enrolments_per_s']:.0f} |",
        f"| raw issuance through REST, registrations/s (p50 / p99 {raw['p50_us'] / 1000:.1f} / "
        f"{raw['p99_us'] / 1000:.1f} ms) | {raw['per_second']:.0f} |",
        f"| enrolments/s ÷ registrations/s | {ratio:.2f} |",
        f"| enrolments per commit (serve's group commit) | {commits or 'not reported'} |",
        "",
        "With every device arriving in the same instant the p99 is the time to drain the whole "
        "burst: the signer's throughput sets it, not the hand-off. Claim to certificate is the "
        f"connect (p99 {enrol.get('connect_ms_p99', 0):.0f} ms here: {enrol['devices']} TLS "
        "handshakes at once, the broker's side on its one thread and the devices' side in the "
        "one-threaded load generator, on the same cores) followed by request to answer (p99 "
        f"{enrol['request_to_answer_ms_p99']:.0f} ms). "
        + ("(A smoke run: the numbers only show that the harness works.)" if mode == "smoke" else ""),
        "",
    ])


def main(argv):
    provision, register, mode, machine, out = argv[:5]
    commits = argv[5] if len(argv) > 5 else ""
    with open(register) as f:
        raw = json.load(f)
    text = render(summary(provision), raw, mode, machine, commits)
    with open(out, "w") as f:
        f.write(text)


if __name__ == "__main__":
    main(sys.argv[1:])
