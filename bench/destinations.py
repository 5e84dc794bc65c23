"""Webhook destinations under load (issue 15): N fast receivers and optionally one slow one.

Enqueues RATE webhooks a second for SECONDS through the producer API (batches every 100 ms),
spread round-robin over the fast receivers and (with --slow) one that answers after SLOW_DELAY
seconds, then waits for every fast delivery and prints one JSON line: the fast deliveries'
latency (enqueue -> the receiver has the request) p50/p99/max in ms, and how many each kind of
receiver got. Standard library only.
"""

import argparse
import asyncio
import http.client
import json
import os
import threading
import time


def percentile(sorted_values, q):
    if not sorted_values:
        return None
    k = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[k]


class Receivers:
    def __init__(self, slow_delay):
        self.fast_latencies = []
        self.fast_ports = set()
        self.slow_port = None
        self.slow_got = 0
        self.slow_delay = slow_delay
        self.concurrent_slow = 0
        self.peak_slow = 0

    async def handle(self, reader, writer, slow):
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                body = await reader.readexactly(length) if length else b""
                if slow:
                    self.slow_got += 1
                    self.concurrent_slow += 1
                    self.peak_slow = max(self.peak_slow, self.concurrent_slow)
                    await asyncio.sleep(self.slow_delay)
                    self.concurrent_slow -= 1
                else:
                    sent = json.loads(body)["data"]["t"]
                    self.fast_latencies.append(time.time() * 1000 - sent)
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def start(self, fast, with_slow):
        ports = []
        for _ in range(fast):
            server = await asyncio.start_server(lambda r, w: self.handle(r, w, False), "127.0.0.1", 0)
            ports.append(server.sockets[0].getsockname()[1])
        self.fast_ports = ports
        if with_slow:
            server = await asyncio.start_server(lambda r, w: self.handle(r, w, True), "127.0.0.1", 0)
            self.slow_port = server.sockets[0].getsockname()[1]


def enqueue(api, key, urls, rate, seconds, done):
    host, port = api.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    per_tick = max(1, rate // 10)
    n = 0
    start = time.time()
    for tick in range(seconds * 10):
        jobs = []
        for _ in range(per_tick):
            url = urls[n % len(urls)]
            n += 1
            jobs.append({"kind": "webhook", "max_attempts": 3,
                         "payload": {"url": url, "event": "bench", "data": {"t": time.time() * 1000}}})
        conn.request("POST", "/v1/jobs/batch", json.dumps({"jobs": jobs}),
                     {"authorization": f"Bearer {key}", "content-type": "application/json"})
        response = conn.getresponse()
        response.read()
        if response.status != 202:
            raise SystemExit(f"enqueue answered {response.status}")
        wait = start + (tick + 1) / 10 - time.time()
        if wait > 0:
            time.sleep(wait)
    done["sent"] = n


async def main():
    p = argparse.ArgumentParser()
    p.add_argument("--api", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--fast", type=int, default=50)
    p.add_argument("--slow", action="store_true")
    p.add_argument("--slow-delay", type=float, default=5.0)
    p.add_argument("--rate", type=int, default=1000)
    p.add_argument("--seconds", type=int, default=30)
    p.add_argument("--label", default="")
    a = p.parse_args()
    receivers = Receivers(a.slow_delay)
    await receivers.start(a.fast, a.slow)
    urls = [f"http://127.0.0.1:{port}/hook" for port in receivers.fast_ports]
    if a.slow:
        urls.append(f"http://127.0.0.1:{receivers.slow_port}/hook")
    done = {}
    thread = threading.Thread(target=enqueue, args=(a.api, a.key, urls, a.rate, a.seconds, done))
    thread.start()
    while thread.is_alive():
        await asyncio.sleep(0.1)
    sent = done["sent"]
    fast_expected = sum(1 for i in range(sent) if urls[i % len(urls)] in urls[: a.fast])
    deadline = time.time() + 120
    while len(receivers.fast_latencies) < fast_expected and time.time() < deadline:
        await asyncio.sleep(0.1)
    lat = sorted(receivers.fast_latencies)
    print(json.dumps({
        "label": a.label, "sent": sent, "fast_expected": fast_expected, "fast_got": len(lat),
        "slow_got": receivers.slow_got, "slow_peak_in_flight": receivers.peak_slow,
        "fast_p50_ms": round(percentile(lat, 0.50) or 0, 1), "fast_p99_ms": round(percentile(lat, 0.99) or 0, 1),
        "fast_max_ms": round(lat[-1], 1) if lat else None,
    }), flush=True)
    # The slow endpoint's requests still waiting are not answered: leave at once.
    os._exit(0)


asyncio.run(main())
