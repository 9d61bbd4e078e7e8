"""A bounded load test for a running model server: concurrency, request count, latency percentiles.

Every run is bounded: at most ``MAX_REQUESTS`` requests, ``MAX_CONCURRENCY`` workers and
``MAX_SECONDS`` of wall time, whichever comes first. The target must be a loopback address
(localhost, 127.0.0.0/8, ::1) unless ``allow_remote=True``: a load test is for your own
server, not someone else's.

Failed requests are counted per error type, with the first message of each; ``check_outcome``
raises ``AllRequestsFailedError`` when not one request succeeded (a server that refuses
everything is not a measurement).
"""

import ipaddress
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlparse

import numpy as np

from tf_distill.errors import UserError
from tf_distill.export.client import MAX_REQUEST_SEEDS

MAX_REQUESTS = 100_000
MAX_CONCURRENCY = 256
MAX_SECONDS = 3600.0


class LoadTestError(UserError, ValueError):
    """A load-test setting out of its bounds, or a target that is not allowed."""


class AllRequestsFailedError(UserError):
    """Every request failed: the server refused or never answered (the message says how)."""


def host_of(address):
    """The host of ``host:port``, ``[v6]:port`` or ``http(s)://host:port/...``."""
    if "://" in address:
        return urlparse(address).hostname or ""
    if address.startswith("["):
        return address[1:address.index("]")]
    return address.rsplit(":", 1)[0] if address.count(":") == 1 else address


def is_loopback(address):
    """True when every address the host resolves to is a loopback address."""
    host = host_of(address)
    if not host:
        return False
    try:
        infos = socket.getaddrinfo(host, None)
    except socket.gaierror:
        return False
    ips = {info[4][0].split("%")[0] for info in infos}
    return bool(ips) and all(ipaddress.ip_address(ip).is_loopback for ip in ips)


def check_target(address, allow_remote=False):
    if not allow_remote and not is_loopback(address):
        raise LoadTestError(f"{address} is not a loopback address; load tests go to your own server only "
                            "(pass allow_remote=True / --allow_remote for one you run elsewhere).")


def run(client, seeds_per_request=1, requests=100, concurrency=4, max_seconds=60.0, truncation_psi=None,
        address=None, allow_remote=False, first_seed=0):
    """Sends ``requests`` from_seeds requests from ``concurrency`` threads; returns a stats dict.

    ``client`` has ``images_from_seeds(seeds, truncation_psi)`` (``client.GrpcClient`` or
    ``RestClient``) and must be safe to share between threads (both are).
    """
    if address is not None:
        check_target(address, allow_remote)
    requests = int(requests)
    concurrency = int(concurrency)
    if not 1 <= requests <= MAX_REQUESTS:
        raise LoadTestError(f"requests must be in [1, {MAX_REQUESTS}], got {requests}.")
    if not 1 <= concurrency <= MAX_CONCURRENCY:
        raise LoadTestError(f"concurrency must be in [1, {MAX_CONCURRENCY}], got {concurrency}.")
    if not 0 < float(max_seconds) <= MAX_SECONDS:  # False for NaN too
        raise LoadTestError(f"max_seconds must be in (0, {MAX_SECONDS:g}], got {max_seconds}.")
    if not 1 <= int(seeds_per_request) <= MAX_REQUEST_SEEDS:
        raise LoadTestError(f"seeds_per_request (--batch) must be in [1, {MAX_REQUEST_SEEDS}], "
                            f"got {seeds_per_request}.")
    lock = threading.Lock()
    next_index = [0]
    latencies, errors, first_errors = [], {}, {}
    start = time.perf_counter()
    deadline = start + float(max_seconds)

    def worker():
        while True:
            with lock:
                i = next_index[0]
                if i >= requests or time.perf_counter() >= deadline:
                    return
                next_index[0] += 1
            seeds = np.arange(seeds_per_request, dtype=np.int64) + first_seed + i * seeds_per_request
            t0 = time.perf_counter()
            try:
                client.images_from_seeds(seeds, truncation_psi=truncation_psi,
                                         timeout=max(deadline - t0, 0.001))
            except Exception as err:  # pylint: disable=broad-except
                with lock:
                    key = type(err).__name__
                    errors[key] = errors.get(key, 0) + 1
                    first_errors.setdefault(key, " ".join(str(err).split())[:300])
                continue
            with lock:
                latencies.append(time.perf_counter() - t0)

    with ThreadPoolExecutor(concurrency) as pool:
        for _ in range(concurrency):
            pool.submit(worker)
    wall = time.perf_counter() - start
    lat = np.asarray(latencies) * 1000.0
    ok = len(latencies)
    stats = {"requests_sent": next_index[0], "ok": ok, "errors": errors, "first_errors": first_errors,
             "concurrency": concurrency,
             "seeds_per_request": int(seeds_per_request), "wall_s": wall,
             "requests_per_s": ok / wall if wall > 0 else 0.0,
             "images_per_s": ok * int(seeds_per_request) / wall if wall > 0 else 0.0}
    if ok:
        stats.update({f"latency_ms_p{p}": float(np.percentile(lat, p)) for p in (50, 90, 99)})
        stats["latency_ms_max"] = float(lat.max())
    return stats


def format_stats(stats):
    lines = [f"requests {stats['ok']}/{stats['requests_sent']} ok in {stats['wall_s']:.2f} s "
             f"(concurrency {stats['concurrency']}, {stats['seeds_per_request']} image(s) per request)",
             f"throughput {stats['requests_per_s']:.2f} req/s, {stats['images_per_s']:.2f} images/s"]
    if stats["ok"]:
        lines.append("latency ms: p50 {latency_ms_p50:.1f}  p90 {latency_ms_p90:.1f}  p99 {latency_ms_p99:.1f}  "
                     "max {latency_ms_max:.1f}".format(**stats))
    if stats["errors"]:
        failed = sum(stats["errors"].values())
        counts = ", ".join(f"{k} x{v}" for k, v in sorted(stats["errors"].items()))
        lines.append(f"errors: {failed} of {stats['requests_sent']} requests failed ({counts})")
        lines += [f"  first {k}: {m}" for k, m in sorted(stats.get("first_errors", {}).items())]
    return "\n".join(lines)


def check_outcome(stats):
    """Raises AllRequestsFailedError when requests were sent and none succeeded; partial failures pass."""
    failed = sum(stats["errors"].values())
    if failed and not stats["ok"]:
        kind = max(stats["errors"], key=stats["errors"].get)  # the most frequent failure, with its first message
        raise AllRequestsFailedError(
            f"all {failed} requests failed ({kind}: {stats.get('first_errors', {}).get(kind, '')}) (check that the "
            "server runs and serves the model; try tf-distill-client with the same --server and --model)")
