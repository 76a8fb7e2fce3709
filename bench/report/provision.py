#!/usr/bin/env python3
"""The provisioning section: devices enrolling themselves over MQTT, beside raw issuance.

    provision.py PROVISION.json REGISTER.json MODE MACHINE OUT.md [COMMITS [TCP.before TCP.after]]

PROVISION.json: onboard_loadgen provision's JSON lines (its "summary" and "renewal");
REGISTER.json: onboard_rest_bench --mode register's result object against the same `onboardctl
serve`. COMMITS: what serve logged at its stop about the group commit ("N recorded in M commit(s),
the largest of K"), when it did. TCP.before/after: "NAME VALUE" lines of /proc/net/netstat's TcpExt
counters (ListenOverflows and the like) around the run.
"""
import json
import sys

GOAL_P99_MS = 500


def record(path, kind, required=True):
    """The loadgen's object of type `kind` ("summary": the enrolment, "renewal")."""
    with open(path) as lines:
        for line in lines:
            found = json.loads(line)
            if found.get("type") == kind:
                return found
    if required:
        raise SystemExit(f"provision.py: no {kind} in {path}")
    return None


def summary(path):
    """The loadgen's summary object (the enrolment)."""
    return record(path, "summary")


def counters(path):
    """NAME VALUE lines as a dict; empty when there is no file."""
    try:
        with open(path) as lines:
            return {name: int(value) for name, value in (line.split() for line in lines if line.strip())}
    except FileNotFoundError:
        return {}


def clusters(histogram):
    """The connect times' 100 ms buckets as runs of non-empty buckets: "0.7-1.2 s: 420"."""
    runs, start, count = [], None, 0
    for i, n in enumerate(list(histogram) + [0]):
        if n and start is None:
            start, count = i, 0
        if n:
            count += n
        elif start is not None:
            runs.append(f"{start / 10:.1f}–{i / 10:.1f} s: {count}")
            start = None
    return "; ".join(runs)


def cpu(phase):
    """CPU seconds of the load generator, the broker and serve in a phase, and their floor."""
    total = phase.get("cpu_loadgen_s", 0) + phase.get("cpu_broker_s", 0) + phase.get("cpu_server_s", 0)
    return (f"{phase.get('cpu_loadgen_s', 0):.2f} / {phase.get('cpu_broker_s', 0):.2f} / "
            f"{phase.get('cpu_server_s', 0):.2f} s (sum {total:.2f} s: at least {total / 2:.2f} s "
            "on 2 cores)")


def render(enrol, raw, mode, machine, commits="", renewal=None, tcp=None):
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
        "enrolments."
        + (f" Renewal: then {renewal['devices']} of the enrolled devices reconnect at once with "
           "their new certificates and each renews on `$provision/<id>/renew` for a new P-256 key "
           "(`serve --renewal-min-age 0`); afterwards the registry holds exactly two active "
           "certificates of each." if renewal else "")
        + " The load generator starts every TCP connect without waiting for it (one thread, "
        "poll(2)); the CPU rows are the seconds each process spent during the phase "
        "(/proc/PID/stat), their sum over 2 the least wall time 2 cores need for it.",
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
        f"| enrolment: CPU of load generator / broker / serve | {cpu(enrol)} |",
        f"| enrolment: connects by time (100 ms buckets, runs) | "
        f"{clusters(enrol.get('connect_histogram_100ms', []))} |",
        *renewal_rows(renewal),
        *tcp_rows(tcp),
        "",
        "With every device arriving in the same instant the p99 is the time to drain the whole "
        "burst: the signer's throughput sets it, not the hand-off. Claim to certificate is the "
        f"connect (p99 {enrol.get('connect_ms_p99', 0):.0f} ms here: {enrol['devices']} TLS "
        "handshakes at once, the broker's side on its one thread and the devices' side in the "
        "one-threaded load generator, on the same cores; Mosquitto 2.0's accept queue holds 100, "
        "so most of a burst of SYNs is dropped and waits for TCP's retransmission, 1 s then 3 s "
        "later: the runs of connect times) followed by request to answer (p99 "
        f"{enrol['request_to_answer_ms_p99']:.0f} ms). "
        + ("(A smoke run: the numbers only show that the harness works.)" if mode == "smoke" else ""),
        "",
    ])


def renewal_rows(renewal):
    """The renewal's rows, when the run had one."""
    if not renewal:
        return []
    return [
        f"| renewal: devices renewed / rejected / refused at connect / no answer / answered with a "
        f"wrong certificate | {renewal['accepted']} of {renewal['devices']} / {renewal['rejected']} / "
        f"{renewal['refused']} / {renewal['timed_out']} / {renewal['wrong_certificate']} |",
        f"| renewal: connect with the device's own certificate, p50 / p99 | "
        f"{renewal['connect_ms_p50']:.1f} / {renewal['connect_ms_p99']:.1f} ms |",
        f"| renewal: request to answer, p50 / p99 | {renewal['request_to_answer_ms_p50']:.1f} / "
        f"{renewal['request_to_answer_ms_p99']:.1f} ms |",
        f"| renewals/s (first connect to last answer, {renewal['seconds']:.2f} s) | "
        f"{renewal['renewals_per_s']:.0f} |",
        f"| renewal: CPU of load generator / broker / serve | {cpu(renewal)} |",
        f"| renewal: connects by time (100 ms buckets, runs) | "
        f"{clusters(renewal.get('connect_histogram_100ms', []))} |",
    ]


def tcp_rows(tcp):
    """The kernel's listen-queue counters over the run (both phases), when read."""
    if not tcp or not tcp[0] or not tcp[1]:
        return []
    before, after = tcp
    delta = {name: after.get(name, 0) - before.get(name, 0) for name in after}
    return [
        f"| SYNs dropped on the broker's full accept queue (TcpExt ListenOverflows / ListenDrops), "
        f"SYN retransmissions (TCPSynRetrans), both phases | {delta.get('ListenOverflows', 0)} / "
        f"{delta.get('ListenDrops', 0)}, {delta.get('TCPSynRetrans', 0)} |",
    ]


def main(argv):
    provision, register, mode, machine, out = argv[:5]
    commits = argv[5] if len(argv) > 5 else ""
    tcp = (counters(argv[6]), counters(argv[7])) if len(argv) > 7 else None
    with open(register) as f:
        raw = json.load(f)
    text = render(summary(provision), raw, mode, machine, commits,
                  record(provision, "renewal", required=False), tcp)
    with open(out, "w") as f:
        f.write(text)


if __name__ == "__main__":
    main(sys.argv[1:])
