"""The gateway benchmark's parts that need no load: its reference app, parsers and verdicts."""

from __future__ import annotations

import hashlib

import pytest
import redis
from fastapi.testclient import TestClient

from vlarena.bench.gateway import (
    API_KEY,
    Measurement,
    parse_hey,
    parse_wrk,
    reference_app,
    verdicts,
)

WRK = """Running 5s test @ http://127.0.0.1:40111/v1/jobs/job-1935a2f8c1a3f9e2b
  2 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    14.74ms    3.33ms  32.35ms   88.77%
    Req/Sec   435.50    138.36   660.00     60.00%
  Latency Distribution
     50%   13.68ms
     75%   16.62ms
     90%   18.06ms
     99%   28.50ms
  10434 requests in 5.00s, 1.05MB read
  Non-2xx or 3xx responses: 3
  Socket errors: connect 0, read 1, write 0, timeout 2
Requests/sec:   2086.80
Transfer/sec:      1.05MB
"""

HEY = """
Summary:
  Total:\t5.0127 secs
  Slowest:\t0.0692 secs
  Fastest:\t0.0010 secs
  Average:\t0.0048 secs
  Requests/sec:\t997.4990

Latency distribution:
  10% in 0.0016 secs
  50% in 0.0024 secs
  99% in 0.0253 secs

Status code distribution:
  [200]\t4980 responses
  [503]\t5 responses

Error distribution:
  [2]\tGet "http://127.0.0.1:40111/v1/jobs/x": EOF
"""


def test_wrk_and_hey_reports_are_read() -> None:
    wrk = parse_wrk(WRK)
    assert wrk == {
        "rps": 2086.8,
        "requests": 10434,
        "p50": pytest.approx(0.01368),
        "p99": pytest.approx(0.0285),
        "errors": 6,
    }
    hey = parse_hey(HEY)
    assert hey == {"rps": 997.499, "p50": 0.0024, "p99": 0.0253, "errors": 7}
    sparse = parse_hey(HEY.replace("  99% in 0.0253 secs\n", ""))
    assert sparse["p99"] == 0.0692


def test_verdicts_hold_vlarena_to_the_targets() -> None:
    def m(target: str, tool: str, rps: float, p99: float) -> Measurement:
        return Measurement(target, "GET /v1/jobs/{id}", tool, rps, 5.0, p99, 0, 1000.0)

    passing = verdicts(
        [
            m("vlarena", "wrk", 960, 80),
            m("reference", "wrk", 1000, 60),
            m("vlarena", "hey -q", 990, 40),
        ]
    )
    assert [ok for _, ok in passing] == [True, True]
    failing = verdicts(
        [
            m("vlarena", "wrk", 930, 80),
            m("reference", "wrk", 1000, 60),
            m("vlarena", "hey -q", 990, 60),
        ]
    )
    assert [ok for _, ok in failing] == [False, False]
    # The per-round ratio decides where there is one, and its interval is printed.
    ratios = {"GET /v1/jobs/{id}": {"median": 0.97, "low": 0.9, "high": 1.02}}
    checks = verdicts([m("vlarena", "wrk", 930, 80), m("reference", "wrk", 1000, 60)], ratios)
    assert checks[0][1] and "0.97x [0.90, 1.02]" in checks[0][0]
    # POST's ratio is validation's cost (the reference validates nothing): not a target.
    post = "POST /v1/jobs (validateOnly)"
    slow_post = [
        Measurement("vlarena", post, "wrk", 400, 5.0, 80, 0),
        Measurement("reference", post, "wrk", 1000, 5.0, 60, 0),
    ]
    checks = verdicts([m("vlarena", "wrk", 960, 80), m("reference", "wrk", 1000, 60), *slow_post])
    assert [ok for _, ok in checks] == [True] and "GET" in checks[0][0]


def test_reference_app_checks_the_key_counts_the_request_and_reads_redis(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BENCH_REDIS_URL", redis_url)
    monkeypatch.setenv("BENCH_KEY_SHA256", hashlib.sha256(API_KEY.encode()).hexdigest())
    monkeypatch.setenv("BENCH_KEY_PREFIX", "bench-test:")
    with TestClient(reference_app()) as client:
        auth = {"Authorization": f"Bearer {API_KEY}"}
        assert client.get("/v1/jobs/job-x").status_code == 401
        assert client.get("/v1/jobs/job-x", headers=auth).status_code == 404
        answer = client.post("/v1/jobs", json={"type": "train"}, headers=auth)
        assert answer.status_code == 200 and answer.json()["spec"] == {"type": "train"}
    # The gateway's rate-limit round trip, on every request with a valid key.
    with redis.Redis.from_url(redis_url) as client:
        counted = client.get("bench-test:reference-limit:bench")
        client.delete("bench-test:reference-limit:bench")
    assert counted == b"2"
