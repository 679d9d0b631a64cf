"""Realistic synthetic health data, deterministic per user id (the same user always gets the same
seven days), as a sandbox backend would auto-seed it."""

from __future__ import annotations

import hashlib
import random
from datetime import UTC, date, datetime, timedelta
from typing import Any

DAYS = 7


def _rng(user_id: str, what: str) -> random.Random:
    seed = int.from_bytes(hashlib.sha256(f"{user_id}:{what}".encode()).digest()[:8], "big")
    return random.Random(seed)  # noqa: S311 - synthetic data, not security


def _days(today: date | None = None) -> list[date]:
    end = today or datetime.now(UTC).date()
    return [end - timedelta(days=i) for i in range(DAYS - 1, -1, -1)]


def scores(user_id: str) -> list[dict[str, Any]]:
    rng = _rng(user_id, "scores")
    return [
        {
            "date": d.isoformat(),
            "recovery": rng.randint(35, 98),
            "sleep": rng.randint(55, 97),
            "strain": round(rng.uniform(4.0, 18.5), 1),
        }
        for d in _days()
    ]


def daily(user_id: str) -> list[dict[str, Any]]:
    rng = _rng(user_id, "daily")
    return [
        {
            "date": d.isoformat(),
            "steps": rng.randint(2500, 16000),
            "active_calories": rng.randint(180, 900),
            "resting_heart_rate": rng.randint(48, 68),
            "hrv_ms": rng.randint(28, 95),
        }
        for d in _days()
    ]


def sleep(user_id: str) -> list[dict[str, Any]]:
    rng = _rng(user_id, "sleep")
    out = []
    for d in _days():
        total = rng.randint(330, 510)
        deep, rem = int(total * rng.uniform(0.13, 0.23)), int(total * rng.uniform(0.18, 0.26))
        out.append(
            {
                "date": d.isoformat(),
                "total_minutes": total,
                "deep_minutes": deep,
                "rem_minutes": rem,
                "light_minutes": total - deep - rem,
                "efficiency": round(rng.uniform(0.82, 0.97), 2),
            }
        )
    return out


def workouts(user_id: str) -> list[dict[str, Any]]:
    rng = _rng(user_id, "workouts")
    kinds = ["run", "ride", "strength", "yoga", "swim", "walk"]
    return [
        {
            "date": d.isoformat(),
            "type": rng.choice(kinds),
            "duration_minutes": rng.randint(20, 95),
            "avg_heart_rate": rng.randint(105, 165),
            "calories": rng.randint(150, 850),
        }
        for d in _days()
        if rng.random() < 0.7
    ]


def timeseries(user_id: str) -> dict[str, Any]:
    rng = _rng(user_id, "timeseries")
    start = datetime.combine(_days()[-1], datetime.min.time(), tzinfo=UTC)
    hr = 60
    samples = []
    for i in range(0, 24 * 60, 15):
        hr = max(45, min(175, hr + rng.randint(-6, 6)))
        samples.append(
            {"t": (start + timedelta(minutes=i)).strftime("%Y-%m-%dT%H:%M:%SZ"), "heart_rate": hr}
        )
    return {"metric": "heart_rate", "interval_minutes": 15, "samples": samples}


def devices(user_id: str) -> list[dict[str, Any]]:
    rng = _rng(user_id, "devices")
    models = [
        ("ring", "Oura Ring Gen3"),
        ("watch", "Apple Watch Series 9"),
        ("band", "WHOOP 4.0"),
        ("watch", "Garmin Forerunner 265"),
    ]
    picked = rng.sample(models, rng.randint(1, 2))
    return [
        {
            "id": f"dev_{rng.randrange(16**8):08x}",
            "type": t,
            "model": m,
            "last_sync": _days()[-1].isoformat() + "T06:12:00Z",
        }
        for t, m in picked
    ]


RESOURCES = {
    "scores": scores,
    "daily": daily,
    "sleep": sleep,
    "workouts": workouts,
    "timeseries": timeseries,
    "devices": devices,
}


# --- webhooks and events: the account-wide side of the API, seeded per account ---------------

EVENT_TYPES = (
    "scores.updated",
    "daily.updated",
    "sleep.updated",
    "workout.created",
    "device.synced",
)


def identifier(prefix: str, *parts: str) -> str:
    """A stable id: the same parts always give the same id."""
    return prefix + hashlib.sha256(":".join(parts).encode()).hexdigest()[:16]


def webhooks(account: str) -> list[dict[str, Any]]:
    """The webhook endpoints an account starts with: one, subscribed to the daily summaries."""
    created = datetime.combine(_days()[0], datetime.min.time(), tzinfo=UTC)
    return [
        {
            "id": identifier("wh_", account, "default"),
            "url": "https://example.com/webhooks/health",
            "events": ["scores.updated", "sleep.updated"],
            "status": "active",
            "created_at": created.strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
    ]


def events(account: str, users: list[str], now: datetime | None = None) -> list[dict[str, Any]]:
    """What happened in an account over the last seven days up to ``now``, newest first: for
    every user and day, the device sync, the night's sleep and the morning's scores, any workout
    and the day's summary."""
    now = now or datetime.now(UTC)
    out = []
    for user_id in sorted(users):
        rng = _rng(user_id, "events")
        trained = {w["date"] for w in workouts(user_id)}
        for d in _days():
            morning = datetime.combine(d, datetime.min.time(), tzinfo=UTC) + timedelta(
                hours=6, minutes=rng.randint(0, 59)
            )
            happened = [
                ("device.synced", morning),
                ("sleep.updated", morning + timedelta(minutes=2)),
                ("scores.updated", morning + timedelta(minutes=3)),
            ]
            if d.isoformat() in trained:
                happened.append(("workout.created", morning + timedelta(hours=rng.randint(2, 12))))
            happened.append(("daily.updated", morning + timedelta(hours=17)))
            for kind, at in happened:
                if at > now:
                    continue
                stamp = at.strftime("%Y-%m-%dT%H:%M:%SZ")
                out.append(
                    {
                        "id": identifier("evt_", account, user_id, kind, stamp),
                        "type": kind,
                        "user_id": user_id,
                        "created_at": stamp,
                    }
                )
    out.sort(key=lambda e: (e["created_at"], e["id"]), reverse=True)
    return out
