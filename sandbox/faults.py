"""Fault injection, v1: jobs that fail while `running`.

Ask for a failing job in either of two ways when creating it:
- metadata `{"sandbox_fail": "<value>"}`: "1", "true" or "yes" fail with code `server_error`;
  any other non-empty value is used as the error code itself (e.g. `"quota_exceeded"`);
  "", "0", "false" and "no" mean no fault;
- a `suffix` containing `sandbox-fail`.
The job validates, queues and runs normally, then fails halfway through its steps with
`error: {"code", "message", "param": null}` and no fine-tuned model. Request-level faults
(429/5xx/timeouts) are not part of v1.

A job may also run on its own clock: metadata `{"sandbox_time_scale": "0.1"}` (wall seconds per
simulated second) lets a test hold a job in `running` long enough to pause or cancel it there,
however fast the server's default clock is.
"""

from __future__ import annotations

from dataclasses import dataclass

FAIL_KEY = "sandbox_fail"
TIME_SCALE_KEY = "sandbox_time_scale"
FAIL_SUFFIX_MARK = "sandbox-fail"
_TRUTHY = {"1", "true", "yes"}
_FALSY = {"", "0", "false", "no"}
DEFAULT_CODE = "server_error"


@dataclass(frozen=True)
class JobFault:
    code: str
    message: str
    at_fraction: float = 0.5


def job_fault(metadata: dict[str, str] | None, suffix: str | None) -> JobFault | None:
    value = (metadata or {}).get(FAIL_KEY)
    if value is not None and value.strip().lower() not in _FALSY:
        code = DEFAULT_CODE if value.strip().lower() in _TRUTHY else value.strip()
        return JobFault(code, f"Fine-tuning failed (sandbox fault injected by metadata '{FAIL_KEY}').")
    if suffix and FAIL_SUFFIX_MARK in suffix:
        return JobFault(DEFAULT_CODE, f"Fine-tuning failed (sandbox fault injected by suffix '{suffix}').")
    return None


def job_time_scale(metadata: dict[str, str] | None, default: float) -> float:
    value = (metadata or {}).get(TIME_SCALE_KEY)
    try:
        scale = float(value) if value is not None else default
    except ValueError:
        return default
    return scale if 1e-6 <= scale <= 100 else default
