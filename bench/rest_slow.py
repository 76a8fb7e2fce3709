#!/usr/bin/env python3
"""Slow and idle clients against `onboardctl serve` (issue 14): how long GET /healthz takes from a
second address (127.0.0.2, a new connection per request) while one address (127.0.0.1) keeps
CONNECTIONS connections open, half of them sending one byte of a never-ending request head every
DRIP seconds, half idle. A connection the server closes (refused beyond its caps, or past its
head deadline) is opened again at the next drip, as an attacker would.

    rest_slow.py PORT SECONDS CONNECTIONS [DRIP] > result.json

CONNECTIONS 0: no attack (the baseline). Prints one JSON object: the probe latencies (seconds,
failures included at the time they took) and what happened to the attack's connections.
"""
import json
import socket
import sys
import threading
import time

PROBE_TIMEOUT = 10.0
HEAD = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "


def probe_once(port):
    """One request on a new connection from 127.0.0.2: (seconds, answered 200)."""
    start = time.monotonic()
    ok = False
    try:
        with socket.socket() as s:
            s.settimeout(PROBE_TIMEOUT)
            s.bind(("127.0.0.2", 0))
            s.connect(("127.0.0.1", port))
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            data = b""
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
            ok = data.startswith(b"HTTP/1.1 200")
    except OSError:
        ok = False
    return time.monotonic() - start, ok


class Attack(threading.Thread):
    def __init__(self, port, count, drip):
        super().__init__(daemon=True)
        self.port, self.count, self.drip = port, count, drip
        self.slots = [None] * count  # (socket, bytes sent) or None
        self.opened = 0
        self.closed_by_server = 0
        self.open_failures = 0
        self.stopping = threading.Event()

    def open(self, i):
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", 0))
            s.settimeout(2)
            s.connect(("127.0.0.1", self.port))
            s.setblocking(False)
        except OSError:
            s.close()
            self.open_failures += 1
            return
        self.slots[i] = (s, 0)
        self.opened += 1

    def server_closed(self, s):
        try:
            data = s.recv(4096)
            return data == b"" or len(data) > 0  # closed, or a refusal (503, 408) before closing
        except BlockingIOError:
            return False
        except OSError:
            return True

    def tick(self):
        for i in range(self.count):
            slot = self.slots[i]
            if slot is None:
                self.open(i)
                continue
            s, sent = slot
            if self.server_closed(s):
                s.close()
                self.slots[i] = None
                self.closed_by_server += 1
                self.open(i)
                continue
            if i % 2 == 0:  # the dripping half; the other half stays idle
                byte = HEAD[sent:sent + 1] or b"a"
                try:
                    s.send(byte)
                    self.slots[i] = (s, sent + 1)
                except OSError:
                    s.close()
                    self.slots[i] = None
                    self.closed_by_server += 1

    def run(self):
        while not self.stopping.is_set():
            self.tick()
            self.stopping.wait(self.drip)

    def stop(self):
        self.stopping.set()
        self.join()
        held = sum(1 for slot in self.slots if slot is not None)
        for slot in self.slots:
            if slot is not None:
                slot[0].close()
        return held


def percentile(sorted_values, p):
    if not sorted_values:
        return None
    index = min(len(sorted_values) - 1, max(0, int(round(p / 100 * len(sorted_values))) - 1))
    return sorted_values[index]


def main(argv):
    port, seconds, connections = int(argv[0]), float(argv[1]), int(argv[2])
    drip = float(argv[3]) if len(argv) > 3 else 2.0
    attack = None
    if connections > 0:
        attack = Attack(port, connections, drip)
        attack.start()
        time.sleep(min(2.0, drip))  # every slot opened once, the first drips sent
    latencies, failures = [], 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        took, ok = probe_once(port)
        latencies.append(took)
        failures += 0 if ok else 1
        time.sleep(0.05)
    result = {"connections": connections, "drip_seconds": drip, "seconds": seconds,
              "probes": len(latencies), "failures": failures}
    ordered = sorted(latencies)
    result["p50"] = percentile(ordered, 50)
    result["p99"] = percentile(ordered, 99)
    result["max"] = ordered[-1] if ordered else None
    if attack is not None:
        held = attack.stop()
        result.update({"attack_opened": attack.opened, "attack_closed_by_server": attack.closed_by_server,
                       "attack_open_failures": attack.open_failures, "attack_held_at_end": held})
    json.dump(result, sys.stdout)
    print()


if __name__ == "__main__":
    main(sys.argv[1:])
