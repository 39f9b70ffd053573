"""Reading a model server's /metrics (Prometheus text) into what `fair status` shows: requests,
error rate and p50/p95 latency since each server started, added up over every replica, and the
model version each replica serves. A small parser of the text format, so the
client needs no prometheus_client."""
from __future__ import annotations

import math
import re
from typing import Any

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse(text: str) -> list[tuple[str, dict[str, str], float]]:
    """(name, labels, value) for each sample line."""
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        if not m:
            continue
        try:
            value = float(m.group(3))
        except ValueError:
            continue
        labels = {k: v.replace('\\"', '"').replace("\\\\", "\\") for k, v in LABEL.findall(m.group(2) or "")}
        out.append((m.group(1), labels, value))
    return out


def quantile(q: float, buckets: list[tuple[float, float]]) -> float | None:
    """Prometheus' histogram_quantile over cumulative (upper bound, count) buckets."""
    buckets = sorted(buckets)
    if not buckets or buckets[-1][1] == 0:
        return None
    total = buckets[-1][1]
    rank = q * total
    prev_bound, prev_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return prev_bound  # in the +Inf bucket: the highest finite bound is all we know
            if count == prev_count:
                return bound
            return prev_bound + (bound - prev_bound) * (rank - prev_count) / (count - prev_count)
        prev_bound, prev_count = bound, count
    return prev_bound


def summarize(text: str) -> dict[str, Any]:
    """{requests, errors, error_rate, p50_seconds, p95_seconds, by_protocol, model, image_digest, run_id}."""
    samples = parse(text)
    requests = errors = 0.0
    by_protocol: dict[str, float] = {}
    buckets: dict[float, float] = {}
    info: dict[str, str] = {}
    for name, labels, value in samples:
        if name == "fairing_model_requests_total":
            requests += value
            by_protocol[labels.get("protocol", "?")] = by_protocol.get(labels.get("protocol", "?"), 0) + value
        elif name == "fairing_model_request_errors_total":
            errors += value
        elif name == "fairing_model_request_duration_seconds_bucket":
            le = float(labels.get("le", "inf").replace("+Inf", "inf"))
            buckets[le] = buckets.get(le, 0.0) + value
        elif name == "fairing_model_info":
            info = {k: labels.get(k, "") for k in ("model", "image_digest", "run_id", "model_version", "model_run")}
    b = list(buckets.items())
    return {"requests": int(requests), "errors": int(errors),
            "error_rate": (errors / requests) if requests else 0.0,
            "p50_seconds": quantile(0.5, b), "p95_seconds": quantile(0.95, b),
            "by_protocol": {k: int(v) for k, v in sorted(by_protocol.items())}, **info}


VERSION_KEYS = ("model_version", "model_run", "image_digest")


def aggregate(replicas: list[dict]) -> dict[str, Any] | None:
    """One summary over every replica (counters and histogram buckets added up, as Prometheus' sum()
    would), plus "replicas": each one's model version, run, image, requests and errors. The served
    model's version is top-level only while every replica agrees; during a rollout they differ and
    "mixed" is true. None when no replica answered."""
    texts = [r["metrics"] for r in replicas if r.get("metrics")]
    if not texts:
        return None
    total = summarize("\n".join(texts))
    rows = []
    for r in replicas:
        row = {"pod": r["pod"], "ready": r.get("ready", False)}
        if r.get("metrics"):
            one = summarize(r["metrics"])
            row.update({k: one.get(k, "") for k in VERSION_KEYS}, requests=one["requests"], errors=one["errors"])
        else:
            row["error"] = r.get("error") or "no metrics"
        rows.append(row)
    seen = {tuple(row.get(k, "") for k in VERSION_KEYS) for row in rows if "error" not in row}
    if len(seen) > 1:
        for k in VERSION_KEYS:
            total[k] = ""
    total["mixed"] = len(seen) > 1
    total["replicas"] = rows
    return total


def scrape(handle: Any) -> dict[str, Any] | None:
    """The summary of a serving handle's /metrics, or None when it has none (not a model server,
    no prometheus_client in its image, not reachable). Every replica when the handle can read them
    one by one (a cluster endpoint, through the pod proxy); else the one its client reaches."""
    per_replica = getattr(handle, "replica_metrics", None)
    note = None
    if callable(per_replica):
        try:
            replicas = per_replica()
        except Exception:  # noqa: BLE001 - status must still print when the cluster is unhappy
            replicas = []
        if replicas is not None:
            return aggregate(replicas)
        note = "one replica, through the Service: this kubeconfig may not get pods/proxy (README, Monitoring)"
    client = getattr(handle, "client", None)
    if not callable(client):
        return None
    try:
        status, body = client().transport.request("GET", "/metrics")
    except Exception:  # noqa: BLE001 - status must still print when the endpoint is down
        return None
    if status != 200:
        return None
    out = summarize(body.decode("utf-8", "replace"))
    return {**out, "note": note} if note else out


def lines(s: dict[str, Any]) -> list[str]:
    def ms(v):
        return "-" if v is None else f"{v * 1000:.1f} ms"

    def version(d):
        return d["model_version"] + (f" from run {d['model_run']}" if d.get("model_run") else "")

    served = [f"model: {version(s)}"] if s.get("model_version") else []
    if s.get("mixed"):
        served = ["model: differs between replicas (a rollout in progress)"]
    for r in s.get("replicas") or []:
        state = "ready" if r["ready"] else "not ready"
        if "error" in r:
            served.append(f"replica {r['pod']} ({state}): {r['error']}")
        else:
            what = version(r) if r.get("model_version") else f"image {r.get('image_digest') or '?'}"
            served.append(f"replica {r['pod']} ({state}): {what}, {r['requests']} requests, {r['errors']} errors")
    if s.get("note"):
        served.append(f"({s['note']})")
    return served + [f"requests: {s['requests']} ({', '.join(f'{k} {v}' for k, v in s['by_protocol'].items()) or 'none'})",
            f"errors: {s['errors']} ({s['error_rate'] * 100:.1f}%)",
            f"latency: p50 {ms(s['p50_seconds'])}, p95 {ms(s['p95_seconds'])}"]
