#!/usr/bin/env python3
"""The soak section (issue 14) from `onboard_loadgen soak`'s JSON lines.

    soak.py SOAK.jsonl MODE OUT.md MACHINE DEVICES SECONDS RATE REGISTER.us [CONTROL.jsonl]

CONTROL.jsonl: the same oracle run briefly against a broker without access control, which must
have found wrong decisions (else the oracle would pass anything, and the run fails).

Writes the section, then exits with status 3 when the run failed its checks: a wrong decision, a
revoked or disabled device disconnected late (1 s or more after its command) or not at all, the
oracle's model disagreeing with `onboardctl acl check`, a churn command that failed, or (except in
a smoke run, too short for it) broker memory that grew or shrank by more than 5 % after warm-up.
"""
import sys

import common

MEMORY_TOLERANCE = 0.05
DISCONNECT_LIMIT_MS = 1000.0


def memory_drift(samples, seconds, fleet_seconds=0.0):
    """(first, last, drift) of the broker's RSS in kB after warm-up (the first fifth of the run
    with the whole fleet connected, at least 10 s); None when fewer than two samples are left.
    The run's seconds count from when the fleet is up."""
    warmup = fleet_seconds + max(10.0, seconds / 5)
    kept = [s for s in samples if s["t"] >= warmup]
    if len(kept) < 2:
        return None
    first, last = kept[0]["rss_kb"], kept[-1]["rss_kb"]
    return first, last, (last - first) / first if first else float("inf")


def failures(summary, drift, mode):
    """What the run failed on, in words; empty when it passed."""
    found = []
    if summary["wrong"]:
        found.append(f"{summary['wrong']} wrong decision(s)")
    if summary["late_disconnects"]:
        found.append(f"{summary['late_disconnects']} device(s) not disconnected within 1 s")
    if summary["disconnects"] and summary["disconnect_max_ms"] >= DISCONNECT_LIMIT_MS:
        found.append(f"a disconnect took {summary['disconnect_max_ms']:.0f} ms")
    if summary["model_mismatches"]:
        found.append(f"{summary['model_mismatches']} disagreement(s) between the oracle's model and "
                     "`onboardctl acl check`")
    if summary["failed_commands"]:
        found.append(f"{summary['failed_commands']} churn command(s) failed")
    if mode != "smoke" and drift is not None and abs(drift[2]) > MEMORY_TOLERANCE:
        found.append(f"broker memory moved {drift[2] * 100:+.1f} % after warm-up")
    return found


def control_summary(records):
    """The control run's summary line; fails when there is none."""
    summaries = [r for r in records if r["type"] == "summary"]
    if not summaries:
        raise SystemExit("soak: the control run wrote no summary")
    return summaries[-1]


def render(records, mode, machine, devices, seconds, rate, register_us, control=None):
    summaries = [r for r in records if r["type"] == "summary"]
    if not summaries:
        raise SystemExit("soak: the load generator wrote no summary")
    s = summaries[-1]
    fleet = next((r for r in records if r["type"] == "fleet"), None)
    samples = [r for r in records if r["type"] == "memory"]
    drift = memory_drift(samples, seconds, fleet["seconds"] if fleet else 0.0)
    failed = failures(s, drift, mode)
    if control is not None and not control["wrong"]:
        failed.append("the control run against a broker without access control found no wrong decision")
    lines = common.header(
        "Soak: churn under load, every decision checked (issue 14)", machine,
        [f"- Load: `onboard_loadgen soak`, {devices:,} devices (half in group soak-a, half in soak-b)",
         f"  over mTLS (MQTT v5, QoS 1) to one broker with the plugin (SQLite registry) for {seconds:g} s",
         f"  once all have connected, {rate} msgs/s in all: each device publishes in turn to its",
         "  own subtree, its cell's `fleet/a/CELL/ID` and `fleet/b/CELL/ID` (4 devices to a cell,",
         "  all subscribed) and a neighbour's subtree (never allowed). Once the fleet is up, one",
         "  `onboardctl` change at a time, about every second (each followed by its `acl check`),",
         "  in turn:",
         "  group rule `fleet/a/#` removed or granted again, a device deny rule at the same priority",
         "  added or removed, a device disabled (enabled 3 s later, then reconnected), moved to the",
         "  other group, revoked (then its reconnect tried), a new device registered and connected.",
         "- Oracle: each CONNACK, SUBACK code, PUBACK code (0x87 = refused), delivery and missed",
         "  delivery is checked against `acl::evaluate` (the plugin's own decision function) over a",
         "  model of the registry read with `onboardctl acl list` and updated by each committed",
         "  change; after every change `onboardctl acl check --json` must agree with the model. A",
         "  decision may match any state in effect from 1 s before it (the propagation window) to",
         "  its end; a change counts from its command's start."])
    if fleet:
        lines += [f"- Fleet: {fleet['connected']:,} of {fleet['devices']:,} devices connected in "
                  f"{fleet['seconds']:.1f} s"]
    if register_us:
        us, n = register_us
        lines += [f"- Registration beforehand: {n:,} devices in {us / 1e6:.0f} s (`onboardctl batch "
                  "register` of one CSV, then `bundle create` of the batch; not part of the run)"]
    lines += [""]
    checked = s["checked"]
    wrong_by_kind = s["wrong_by_kind"]
    rows = [[kind, f"{checked[kind]:,}", str(wrong_by_kind.get(kind, 0))] for kind in checked]
    rows.append(["**all**", f"**{s['decisions']:,}**", f"**{s['wrong']}**"])
    lines += common.table([("decision", "l"), ("checked", "r"), ("wrong", "r")], rows)
    lines += [""]
    lines += common.table(
        [("measure", "l"), ("value", "r")],
        [["registry changes committed", f"{s['changes']:,}"],
         ["churn commands failed", str(s["failed_commands"])],
         ["model vs `acl check` disagreements", str(s["model_mismatches"])],
         ["revoked/disabled devices disconnected", str(s["disconnects"])],
         ["disconnect p50 / p99 / max (ms after the command's exit)",
          f"{s['disconnect_p50_ms']:.0f} / {s['disconnect_p99_ms']:.0f} / {s['disconnect_max_ms']:.0f}"],
         ["not disconnected within 1 s", str(s["late_disconnects"])],
         ["other devices disconnected unexpectedly", str(s["unexpected_closes"])],
         ["published msgs/s", f"{s['msgs_per_s']:.0f}"],
         ["delivered msgs/s", f"{s['deliveries_per_s']:.0f}"],
         ["messages never acknowledged (publisher disconnected)", f"{s['unresolved']:,}"],
         ["deliveries after their 2 s judging delay", f"{s['late_deliveries']:,}"]])
    if drift is not None:
        first, last, d = drift
        lines += ["", f"- Broker RSS (the plugin's snapshot included; sampled every few seconds): "
                  f"{first / 1024:.1f} MiB after warm-up, {last / 1024:.1f} MiB at the end "
                  f"({d * 100:+.1f} %; limit ±{MEMORY_TOLERANCE * 100:.0f} %)"]
    if control is not None:
        lines += ["", f"- Control: the same oracle for {control['seconds']:g} s with {control['devices']} devices "
                  "against a broker without access control (no plugin, the certificate's CN as username) "
                  f"found {control['wrong']:,} wrong decisions of {control['decisions']:,} and "
                  f"{control['late_disconnects']} late disconnects, as it must."]
    wrongs = [r for r in records if r["type"] == "wrong"]
    if wrongs:
        lines += ["", "First wrong decisions:", ""]
        lines += [f"- {r['decision']}: {r['what']}" for r in wrongs[:5]]
    lines += ["", "**Result: " + ("FAILED: " + "; ".join(failed) if failed else "passed") + "**"]
    if mode == "smoke":
        lines += ["", common.smoke_note(f"{devices} devices for {seconds:g} s")]
    return lines, failed


def main(argv):
    path, mode, out, machine, devices, seconds, rate, register, *control_path = argv
    records = common.read_json_lines(path)
    control = control_summary(common.read_json_lines(control_path[0])) if control_path else None
    try:
        with open(register) as f:
            us, n = f.read().split()
            register_us = (int(us), int(n))
    except OSError:
        register_us = None
    lines, failed = render(records, mode, machine, int(devices), float(seconds), rate, register_us, control)
    common.write_lines(out, lines)
    common.echo_tables(lines)
    if failed:
        print("soak: FAILED: " + "; ".join(failed), file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
