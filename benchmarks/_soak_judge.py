"""What benchmarks/soak.py concludes from a run: the client's ledger of what
it sent, the request log checked against it, the verdicts on the samples,
and the plot. Nothing here talks to the server except check_records."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from itertools import count

import httpx

# Allowed between the idle sample after warm-up and the one after the steady
# phase (nothing in flight at either): a file or socket the server opens
# lazily and keeps (a database connection of its pool, the SQLite WAL), and
# a task of the scrape that reads the count. KV blocks held: none allowed.
FD_NOISE = 2
TASK_NOISE = 2


@dataclass
class Sent:
    """One request of the client's ledger."""

    kind: str
    request_id: str  # the X-Request-ID the client sent
    expected_status: int
    expected_record: str  # succeeded | failed | aborted
    status: int | None = None
    record_id: str | None = None  # X-Modelbench-Record-Id: the server accepted it
    ok: bool = False  # answered as its kind must be
    error: str | None = None  # a transport error


@dataclass
class Ledger:
    sent: list[Sent] = field(default_factory=list)
    jobs: list[dict] = field(default_factory=list)  # id, batch_id, status, attempts
    batch_errors: list[str] = field(default_factory=list)
    numbers: count = field(default_factory=count)

    def next_number(self) -> int:
        return next(self.numbers)


async def read_request_log(url: str) -> list[dict]:
    """Every record of GET /v1/requests, a page at a time."""
    records: list[dict] = []
    params: dict[str, str | int] = {"limit": 1000}
    async with httpx.AsyncClient(base_url=url, timeout=120) as client:
        while True:
            page = await client.get("/v1/requests", params=params)
            page.raise_for_status()
            body = page.json()
            records += body["data"]
            if not body["has_more"]:
                return records
            params["cursor"] = body["next_cursor"]


async def check_records(url: str, ledger: Ledger, wait_s: float = 30.0) -> dict:
    """Each request the server accepted, and each attempt of each batch job,
    is in the request log exactly once, with the status its kind implies.
    A stream the client cut off is recorded when the server notices the
    disconnect, which on a busy machine can come after the idle sample: the
    log is read again, for up to ``wait_s``, while records are missing."""
    accepted = [s for s in ledger.sent if s.record_id is not None]
    expected = len(accepted) + sum(j["attempts"] for j in ledger.jobs)
    deadline = time.monotonic() + wait_s
    while True:
        records = await read_request_log(url)
        if len(records) >= expected or time.monotonic() > deadline:
            break
        await asyncio.sleep(1.0)
    by_id = {r["id"]: r for r in records}
    per_request_id = Counter(r["http_request_id"] for r in records)
    missing = [s.request_id for s in accepted if s.record_id not in by_id]
    duplicated = [s.request_id for s in accepted if per_request_id[s.request_id] > 1]
    wrong_status, cancelled_finished_first = [], 0
    for s in accepted:
        record = by_id.get(s.record_id or "")
        if record is None:
            continue
        if s.kind == "cancelled" and record["status"] == "succeeded":
            cancelled_finished_first += 1  # the last token beat the disconnect: not a fault
        elif record["status"] != s.expected_record:
            wrong_status.append(f"{s.request_id}: {record['status']}, not {s.expected_record}")
    job_mismatch = [
        f"job {j['id']}: {per_request_id[j['id']]} records for {j['attempts']} attempts"
        for j in ledger.jobs
        if per_request_id[j["id"]] != j["attempts"]
    ]
    known = {s.record_id for s in accepted} | {j["id"] for j in ledger.jobs}
    unledgered = [
        r["id"] for r in records if r["id"] not in known and r["http_request_id"] not in known
    ]
    return {
        "records": len(records),
        "expected": expected,
        "accepted_requests": len(accepted),
        "job_attempts": sum(j["attempts"] for j in ledger.jobs),
        "missing": missing[:20],
        "num_missing": len(missing),
        "duplicated": duplicated[:20],
        "num_duplicated": len(duplicated),
        "wrong_status": wrong_status[:20],
        "num_wrong_status": len(wrong_status),
        "job_mismatch": job_mismatch[:20],
        "unledgered": unledgered[:20],
        "cancelled_aborted": sum(
            1
            for s in accepted
            if s.kind == "cancelled" and by_id.get(s.record_id or "", {}).get("status") == "aborted"
        ),
        "cancelled_finished_first": cancelled_finished_first,
        "recorded_once": not (missing or duplicated or wrong_status or job_mismatch or unledgered)
        and len(records) == expected,
    }


def least_squares_slope(ts: list[float], ys: list[float]) -> float | None:
    """d y / d t of the least-squares line, or None with fewer than 3 points."""
    if len(ts) < 3:
        return None
    mean_t, mean_y = sum(ts) / len(ts), sum(ys) / len(ys)
    var = sum((t - mean_t) ** 2 for t in ts)
    if var == 0:
        return None
    return sum((t - mean_t) * (y - mean_y) for t, y in zip(ts, ys, strict=True)) / var


def series(samples: list[dict], key: str, phase: str = "steady") -> tuple[list[float], list[float]]:
    picked = [s for s in samples if s["phase"] == phase and s.get(key) is not None]
    return [s["t_s"] for s in picked], [float(s[key]) for s in picked]


def summary(samples: list[dict], key: str, idle: dict) -> dict:
    ts, ys = series(samples, key)
    slope = least_squares_slope(ts, ys)
    return {
        "idle_start": idle["start"].get(key),
        "idle_end": idle["end"].get(key),
        "steady_min": min(ys, default=None),
        "steady_max": max(ys, default=None),
        "steady_mean": round(sum(ys) / len(ys), 4) if ys else None,
        "steady_slope_per_min": None if slope is None else round(slope * 60, 4),
    }


def grew(part: dict, noise: float) -> bool | None:
    start, end = part["idle_start"], part["idle_end"]
    return None if start is None or end is None else end - start > noise


def judge(run: dict, ledger: Ledger, max_rss_slope_mb_per_min: float) -> dict:
    """The figures and verdicts of a run (see soak.py's docstring)."""
    samples, idle = run["samples"], run["idle"]
    ts, rss = series(samples, "rss_mb")
    slope = least_squares_slope(ts, rss)
    rss_part = summary(samples, "rss_mb", idle) | {
        "slope_mb_per_min": None if slope is None else round(slope * 60, 4),
        "samples_in_fit": len(ts),
        "max_mb": max((s["rss_mb"] for s in samples), default=None),
    }
    parts = {key: summary(samples, key, idle) for key in ("kv_usage", "fds", "tasks", "threads")}
    kinds: dict[str, dict[str, int]] = {}
    for s in ledger.sent:
        k = kinds.setdefault(s.kind, {"sent": 0, "as_expected": 0, "transport_errors": 0})
        k["sent"] += 1
        k["as_expected"] += s.ok
        k["transport_errors"] += s.error is not None
    steady_s = run["steady_s"][1] - run["steady_s"][0]
    records = run["records"] | {"dropped_by_writer": idle["end"].get("records_dropped")}
    kv_grew, fds_grew, tasks_grew = (
        grew(parts["kv_usage"], 0.0),
        grew(parts["fds"], FD_NOISE),
        grew(parts["tasks"], TASK_NOISE),
    )
    verdicts = {
        "rss_flat": slope is not None and slope * 60 < max_rss_slope_mb_per_min,
        "kv_blocks_no_growth": kv_grew is False,
        "fds_no_growth": fds_grew is False,
        "tasks_no_growth": tasks_grew is False,
        "requests_as_expected": all(s.ok for s in ledger.sent)
        and not ledger.batch_errors
        and all(j["status"] == "succeeded" for j in ledger.jobs),
        "recorded_once": records["recorded_once"] and not records["dropped_by_writer"],
    }
    return {
        "passed": all(verdicts.values()),
        "verdicts": verdicts,
        "criteria": {
            "rss_flat": f"least-squares RSS slope over the steady phase < "
            f"{max_rss_slope_mb_per_min} MB/min",
            "kv_blocks_no_growth": "KV blocks held when idle after the steady phase <= when "
            "idle before it (no noise allowed)",
            "fds_no_growth": f"open fds when idle after <= before + {FD_NOISE}",
            "tasks_no_growth": f"asyncio tasks when idle after <= before + {TASK_NOISE}",
            "requests_as_expected": "every request answered as its kind must be (200, or the "
            "4xx of a bad one; no transport error), every batch job succeeded",
            "recorded_once": "every accepted request and every job attempt in the request "
            "log exactly once with the status its kind implies; none dropped, none extra",
        },
        "steady_phase_s": run["steady_s"],
        "requests": {
            "total": len(ledger.sent),
            "per_s": round(len(ledger.sent) / run["load_s"], 2) if run["load_s"] else None,
            "by_kind": kinds,
            "batches": len({j["batch_id"] for j in ledger.jobs}),
            "jobs": len(ledger.jobs),
            "batch_errors": ledger.batch_errors[:20],
        },
        "rss_mb": rss_part,
        "kv_usage": parts["kv_usage"],
        "fds": parts["fds"],
        "tasks": parts["tasks"],
        "threads": parts["threads"],
        "records": records,
        "steady_seconds": round(steady_s, 1),
    }


def plot(result: dict, path: str) -> None:
    """RSS, KV use, and fds and tasks over time; the warm-up shaded, the
    steady phase's RSS fit drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = result["samples"]
    minutes = [s["t_s"] / 60 for s in samples]
    fig, (ax_rss, ax_kv, ax_fd) = plt.subplots(3, 1, sharex=True, figsize=(8, 7.5))
    ax_rss.plot(minutes, [s["rss_mb"] for s in samples], ".-", label="server RSS")
    ts, rss = series(samples, "rss_mb")
    slope = least_squares_slope(ts, rss)
    if slope is not None:
        mean_t, mean_y = sum(ts) / len(ts), sum(rss) / len(rss)
        fit = [mean_y + slope * (t - mean_t) for t in (ts[0], ts[-1])]
        label = f"steady fit: {slope * 60:+.3f} MB/min"
        ax_rss.plot([ts[0] / 60, ts[-1] / 60], fit, "-", color="black", label=label)
    ax_rss.set_ylabel("RSS (MB)")
    ax_kv.plot(minutes, [100 * (s["kv_usage"] or 0) for s in samples], ".-", color="tab:orange")
    ax_kv.set_ylabel("KV blocks held (%)")
    ax_fd.plot(minutes, [s["fds"] for s in samples], ".-", label="open fds")
    ax_fd.plot(minutes, [s["tasks"] for s in samples], ".-", label="asyncio tasks")
    ax_fd.set_ylabel("count")
    ax_fd.set_xlabel("time since the load started (min)")
    idle = [s for s in samples if s["phase"] == "idle"]  # the two compared for growth
    idle_minutes = [s["t_s"] / 60 for s in idle]
    ax_rss.plot(idle_minutes, [s["rss_mb"] for s in idle], "ks", label="idle samples")
    ax_kv.plot(idle_minutes, [100 * (s["kv_usage"] or 0) for s in idle], "ks")
    ax_fd.plot(idle_minutes, [s["fds"] for s in idle], "ks")
    ax_fd.plot(idle_minutes, [s["tasks"] for s in idle], "ks")
    start, _ = result["steady_phase_s"]
    for ax in (ax_rss, ax_kv, ax_fd):
        ax.axvspan(0, start / 60, color="grey", alpha=0.15, label="warm-up")
        ax.grid(alpha=0.3)
    ax_rss.legend(loc="lower right")
    ax_fd.legend(loc="upper left")
    verdict = "passed" if result["passed"] else "FAILED"
    fig.suptitle(f"soak: {result['config']['model_served']}, {result['host']} ({verdict})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
