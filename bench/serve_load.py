#!/usr/bin/env python3
"""Loopback load generator for `recur serve` (docs/serving.md, "Why Kestrel"): how many slowloris connections
stay open, and keep-alive GET throughput. Usage: serve_load.py PORT slowloris N HOLD_S | serve_load.py PORT throughput THREADS SECONDS [PATH]"""
import socket, sys, time, threading, json, http.client
port = int(sys.argv[1]); mode = sys.argv[2]
if mode == "slowloris":
    n = int(sys.argv[3]); hold = float(sys.argv[4])
    socks = []
    for i in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n")
        socks.append(s)
    t0 = time.time()
    # a normal request while the slow connections are open (retried for up to 30 s if refused)
    health = None
    while health is None and time.time() - t0 < 30:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            c.request("GET", "/health"); r = c.getresponse(); r.read()
            health = (r.status, round(time.time() - t0, 3))
        except OSError:
            time.sleep(0.2)
    time.sleep(hold)
    still_open = 0
    for s in socks:
        s.setblocking(False)
        try:
            while s.recv(4096) != b"":  # drain a 408 the server may have sent before closing
                pass
        except BlockingIOError:
            still_open += 1  # nothing more to read and not closed
        except OSError:
            pass             # reset by the server
        s.close()
    print(json.dumps({"mode": mode, "connections": n, "hold_s": hold, "health": health, "still_open": still_open}))
elif mode == "throughput":
    threads = int(sys.argv[3]); seconds = float(sys.argv[4]); path = sys.argv[5] if len(sys.argv) > 5 else "/v1/models"
    count = [0] * threads; errors = [0] * threads
    stop = time.time() + seconds
    def worker(i):
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        while time.time() < stop:
            try:
                c.request("GET", path); r = c.getresponse(); r.read()
                if r.status == 200: count[i] += 1
                else: errors[i] += 1
            except Exception:
                errors[i] += 1; c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    ts = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    [t.start() for t in ts]; [t.join() for t in ts]
    print(json.dumps({"mode": mode, "threads": threads, "seconds": seconds, "path": path, "requests": sum(count), "per_s": round(sum(count) / seconds, 1), "errors": sum(errors)}))
