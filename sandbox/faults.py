"""Fault injection: every knob the sandbox has for making the provider misbehave, in one place.

There are three kinds of fault: jobs that fail (chosen when the job is created), request faults
chosen per request by a header, and request faults scripted through a control plane. The last is
for tests that drive Tuneforge's worker, which talks to the sandbox through the `openai` SDK and so
cannot add headers of its own.

1. Jobs that fail while `running` (job metadata, or the suffix)
   - metadata `{"sandbox_fail": "<value>"}`: "1", "true" or "yes" fail with code `server_error`;
     any other non-empty value is used as the error code itself (e.g. `"quota_exceeded"`);
     "", "0", "false" and "no" mean no fault;
   - a `suffix` containing `sandbox-fail`.
   The job validates, queues and runs normally, then fails halfway through its steps with
   `error: {"code", "message", "param": null}` and no fine-tuned model.
   A job may also run on its own clock: metadata `{"sandbox_time_scale": "0.1"}` (wall seconds per
   simulated second) lets a test hold a job in `running` long enough to pause or cancel it there,
   however fast the server's default clock is.

2. Request faults: the actions (the same fields in the header and in control-plane rules)
   - `status`: answer `status` (400–599; typically 429, 500, 502, 503, 408) with OpenAI's error
     envelope `{"error": {"message", "type", "param": null, "code"}}`. The handler does not run, so
     nothing is created. Defaults: 429 → type `requests`, code `rate_limit_exceeded`; 408 → type
     `timeout`, code `request_timeout`; 5xx → type `server_error`, code `server_error` (502
     `bad_gateway`, 503 `service_unavailable`, 504 `gateway_timeout`); override with `type`,
     `code`, `message`. `retry_after` (seconds) sends `retry-after`, `retry_after_ms` sends
     `retry-after-ms`; neither is required (a 429 without one is legal and the SDK then backs off
     0.5 s, 1 s, …). `should_retry: true|false` sends `x-should-retry`. The SDK prefers
     `retry-after-ms`, honours values in (0, 120] s, and does not retry at all beyond 120 s;
     `retry_after_ms: 1` keeps tests fast (`retry-after: 0` is not > 0, so the SDK backs off).
   - `delay`: wait `delay_s` seconds (asyncio, the event loop stays free), then handle the request
     normally. The request body is read before waiting, so the operation still happens after a
     client has timed out and gone: a timed-out create may well have created the job.
   - `stall_body`: handle the request, send the status line and headers at once, then hold the
     body for `delay_s` seconds (a mid-body stall: the SDK's read timeout fires after the headers).
   - `drop_after`: handle the request (the job, file or upload is really created), throw its
     response away and close the connection without a byte of it. The SDK sees
     `APIConnectionError` (httpx: "Server disconnected without sending a response") and, if it
     has retries left, retries: the "ambiguous create".
   - `reset`: reset the connection (TCP RST) without handling the request: nothing is created.
   `delay_s` on `status`, `drop_after` or `reset` waits that long first (a slow 503, a slow drop).
   How the connection is closed: see `fault_injection.py`.

3. Per request: the header `x-sandbox-fault: <spec>` on any `/v1` request
   `<spec>` is either a JSON object of action fields (`{"action": "status", "status": 429,
   "retry_after_ms": 1}`) or `;`-separated items: a status number, an action word, or `key=value`
   with the keys `status`, `retry_after`, `retry_after_ms`, `should_retry`, `delay` (or `delay_s`),
   `code`, `type`, `message`. Examples: `429; retry_after_ms=1`, `503; should_retry=false`,
   `delay=2`, `stall_body; delay=2`, `drop_after`, `reset`. The action may be left out when a
   status (→ `status`) or a delay (→ `delay`) says it. A malformed spec is answered 400 with
   `param: "x-sandbox-fault"`. The header applies to every request carrying it, and the SDK resends
   its headers on each retry, so every attempt fails; use a rule for "fail n times, then succeed".
   A header fault takes precedence: rules are not consulted for that request.

4. Scripted: rules on the control plane (outside `/v1`, no authentication: the sandbox is a local
   test double and must never face a network it does not trust)
   - `POST /sandbox/faults` with a rule, a list of rules, or `{"rules": [...]}`: appends them and
     answers `{"object": "list", "data": [<rule>...]}` with their ids.
   - `GET /sandbox/faults`: every rule with its counters; `DELETE /sandbox/faults`: remove all
     (`{"deleted": n}`); `DELETE /sandbox/faults/{id}`: remove one.
   A rule is the action fields above plus what it matches and how often:
   - `method`: `"POST"` etc.; absent or null = any method;
   - `path`: an exact request path (`/v1/fine_tuning/jobs/ftjob-abc`), a route template as the
     stats name it (`/v1/fine_tuning/jobs/{job_id}`), or a prefix ending in `*` (`/v1/files*`);
     it must start with `/v1`; absent or null = any `/v1` path. A template names one route only
     (`/v1/fine_tuning/jobs/{job_id}` is not its `/events`: use `/v1/fine_tuning/jobs/*` for both);
   - `model`: only requests about this model: the `model` of a JSON body (job create, chat), the
     model in `/v1/models/{model}`, or the job in `/v1/fine_tuning/jobs/{job_id}…` (its base or
     fine-tuned model). A base model matches by snapshot or alias alike (`gpt-4o-mini` matches
     requests naming `gpt-4o-mini-2024-07-18`); fine-tuned names match exactly;
   - `times`: how many requests it fires on (default 1; null = every matching request);
   - `skip`: let the first n matching requests through untouched (default 0);
   - `probability` (0 < p ≤ 1, default 1) and `seed`: fire on a matching request with this
     probability, drawn from the rule's own `random.Random(seed)`, so a seeded run repeats.
   Rules are tried in the order they were added; the first that fires wins, and a rule that does not
   fire (skipped, unlucky, used up) passes the request on to the next. Each rule reports `matched`
   (requests that reached it and matched method, path and model), `fired`, and `remaining` (null
   when unlimited). A used-up rule stays listed, with `remaining: 0`, until it is removed.
   A listed rule: `{"id": "flt_1", "object": "sandbox.fault_rule", "action", "status",
   "retry_after", "retry_after_ms", "should_retry", "code", "type", "message", "delay_s", "method",
   "path", "model", "times", "skip", "probability", "seed", "remaining", "matched", "fired"}`.
   A bad rule is answered 400 (OpenAI envelope, `param: "rules[i]"`) and none of the batch is added.

5. Where faults sit: after the bearer check (a request without a key is still 401: a provider
   throttles or fails requests it has accepted) and after route resolution (rules and stats know the
   route template), before body validation and the handler. Only `/v1` is subject to faults and
   counted; `/healthz` and `/sandbox/*` never are. A `status` answer carries
   `x-sandbox-fault-applied: <rule id | header>` and, like every answer, `x-request-id`.

6. Observation
   - `GET /sandbox/stats`: `{"requests": {"POST /v1/fine_tuning/jobs": 2, ...}, "faults": {...},
     "total_requests": n, "total_faults": n, "jobs": {"created": n, "by_metadata": {"k=v": n}},
     "files": {"<purpose>": n}}`. Requests are keyed `METHOD route-template` (the concrete path when
     no route matched) and count every `/v1` request that passed the bearer check, faulted or not:
     an SDK call that was retried twice counts 3. `jobs` and `files` count what exists.
   - `GET /sandbox/requests?limit=n`: the last requests (at most 1000 kept), oldest first:
     `{"seq", "at" (unix seconds, float), "method", "path", "route", "fault": null | {"source":
     "<rule id>" | "header", "action", "status"?}, "status": <answered status> | null}`; a dropped
     or reset request has `status: null`; a delayed one has the status the handler answered, even
     to a client that had gone. Use `at` to check that a retry waited for `retry-after`.
   - `DELETE /sandbox/stats`: zero the counters and the request log (rules and jobs stay).
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from sandbox.catalog import resolve_base
from sandbox.errors import ApiError, bad_request

# ---- 1. jobs that fail ---------------------------------------------------------------------------
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


# ---- 2. request fault actions ------------------------------------------------------------------
FAULT_HEADER = "x-sandbox-fault"
APPLIED_HEADER = "x-sandbox-fault-applied"
Action = Literal["status", "delay", "stall_body", "drop_after", "reset"]
ACTIONS: tuple[str, ...] = ("status", "delay", "stall_body", "drop_after", "reset")
_STATUS_ONLY = ("status", "retry_after", "retry_after_ms", "should_retry", "code", "type", "message")
MAX_DELAY_S = 600.0

_ERROR_DEFAULTS: dict[int, tuple[str, str, str]] = {
    408: ("timeout", "request_timeout", "Request timed out."),
    429: (
        "requests",
        "rate_limit_exceeded",
        "Rate limit reached for requests (sandbox fault). Please try again later.",
    ),
    500: (
        "server_error",
        "server_error",
        "The server had an error while processing your request. Sorry about that!",
    ),
    502: ("server_error", "bad_gateway", "Bad gateway."),
    503: ("server_error", "service_unavailable", "The server is overloaded or not ready yet."),
    504: ("server_error", "gateway_timeout", "Gateway timeout."),
}


class FaultAction(BaseModel):
    """What a fault does (the fields a header spec may carry)."""

    model_config = ConfigDict(extra="forbid")

    action: Action
    status: int | None = Field(default=None, ge=400, le=599)
    retry_after: float | None = Field(default=None, ge=0)
    retry_after_ms: float | None = Field(default=None, ge=0)
    should_retry: bool | None = None
    code: str | None = None
    type: str | None = None
    message: str | None = None
    delay_s: float = Field(default=0.0, ge=0, le=MAX_DELAY_S)

    @model_validator(mode="after")
    def _coherent(self) -> FaultAction:
        if self.action == "status" and self.status is None:
            raise ValueError("'status' is required for action 'status'")
        if self.action != "status":
            extra = [name for name in _STATUS_ONLY[1:] if getattr(self, name) is not None]
            if self.status is not None or extra:
                raise ValueError(f"{['status', *extra]} only apply to action 'status'")
        if self.action in ("delay", "stall_body") and self.delay_s <= 0:
            raise ValueError(f"'delay_s' > 0 is required for action '{self.action}'")
        return self

    def error(self) -> ApiError:
        """The error a `status` fault answers with, headers included."""
        assert self.status is not None
        if self.status >= 500:
            default = ("server_error", "server_error", _ERROR_DEFAULTS[500][2])
        else:
            default = ("invalid_request_error", "sandbox_fault", f"Sandbox fault: HTTP {self.status}.")
        type_, code, message = _ERROR_DEFAULTS.get(self.status, default)
        headers: dict[str, str] = {}
        if self.retry_after is not None:
            headers["retry-after"] = _number(self.retry_after)
        if self.retry_after_ms is not None:
            headers["retry-after-ms"] = _number(self.retry_after_ms)
        if self.should_retry is not None:
            headers["x-should-retry"] = "true" if self.should_retry else "false"
        return ApiError(
            self.status,
            self.message or message,
            type=self.type or type_,
            code=self.code or code,
            headers=headers,
        )


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


class FaultRuleSpec(FaultAction):
    """A control-plane rule: an action plus what it matches and how often it fires."""

    method: str | None = None
    path: str | None = None
    model: str | None = None
    times: int | None = Field(default=1, ge=1)
    skip: int = Field(default=0, ge=0)
    probability: float = Field(default=1.0, gt=0, le=1)
    seed: int | None = None

    @field_validator("method")
    @classmethod
    def _method(cls, value: str | None) -> str | None:
        return value.upper() if value else None

    @field_validator("path")
    @classmethod
    def _path(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("/v1"):
            raise ValueError("must start with /v1 (only the OpenAI API is subject to faults)")
        return value or None


_Spec = TypeVar("_Spec", bound=BaseModel)


class FaultSpecError(ValueError):
    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param

    def api_error(self) -> ApiError:
        return bad_request(str(self), param=self.param, code="invalid_fault_spec")


def _validated(schema: type[_Spec], data: Any, param: str) -> _Spec:
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        message = first.get("msg", "invalid")
        raise FaultSpecError(f"Invalid fault: {where + ': ' if where else ''}{message}", param) from None


_HEADER_KEYS = {
    "status": "status",
    "retry_after": "retry_after",
    "retry-after": "retry_after",
    "retry_after_ms": "retry_after_ms",
    "retry-after-ms": "retry_after_ms",
    "should_retry": "should_retry",
    "delay": "delay_s",
    "delay_s": "delay_s",
    "code": "code",
    "type": "type",
    "message": "message",
}


def parse_header_spec(value: str) -> FaultAction:
    """`x-sandbox-fault: 429; retry_after_ms=1` or a JSON object (see the module docstring)."""
    text = value.strip()
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except ValueError:
            raise FaultSpecError("Invalid fault: the JSON spec does not parse", FAULT_HEADER) from None
        if isinstance(data, dict) and "action" not in data:
            data = {**data, "action": _implied_action(data)}
        return _validated(FaultAction, data, FAULT_HEADER)
    fields: dict[str, Any] = {}
    for item in (part.strip() for part in text.split(";")):
        if not item:
            continue
        key, eq, raw = (s.strip() for s in item.partition("="))
        if not eq:
            if key.isdigit():
                fields["status"] = key
            elif key in ACTIONS:
                fields["action"] = key
            else:
                raise FaultSpecError(f"Invalid fault: unknown item {key!r}", FAULT_HEADER)
        elif key.lower() in _HEADER_KEYS:
            fields[_HEADER_KEYS[key.lower()]] = raw
        else:
            raise FaultSpecError(f"Invalid fault: unknown key {key!r}", FAULT_HEADER)
    fields.setdefault("action", _implied_action(fields))
    return _validated(FaultAction, fields, FAULT_HEADER)


def _implied_action(fields: dict[str, Any]) -> str | None:
    if fields.get("status") is not None:
        return "status"
    if fields.get("delay_s") is not None:
        return "delay"
    return None


def parse_rules(body: Any) -> list[FaultRuleSpec]:
    """A rule, a list of rules, or `{"rules": [...]}` → validated rules (all or none)."""
    if isinstance(body, dict) and set(body) == {"rules"}:
        body = body["rules"]
    items = body if isinstance(body, list) else [body]
    if not items:
        raise FaultSpecError("Invalid fault: no rules given", "rules")
    return [_validated(FaultRuleSpec, item, f"rules[{i}]") for i, item in enumerate(items)]


# ---- 3. matching and bookkeeping --------------------------------------------------------------
LOG_SIZE = 1000


@dataclass
class Fired:
    """A fault chosen for one request."""

    action: FaultAction
    source: str  # the rule id, or "header"


@dataclass
class Rule:
    id: str
    spec: FaultRuleSpec
    rng: random.Random
    matched: int = 0
    fired: int = 0

    def remaining(self) -> int | None:
        return None if self.spec.times is None else max(self.spec.times - self.fired, 0)

    def selects(self, method: str, path: str, route: str | None) -> bool:
        if self.spec.method is not None and self.spec.method != method:
            return False
        pattern = self.spec.path
        if pattern is None:
            return True
        if pattern.endswith("*"):
            return path.startswith(pattern[:-1])
        return pattern in (path, route)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "sandbox.fault_rule",
            **self.spec.model_dump(),
            "remaining": self.remaining(),
            "matched": self.matched,
            "fired": self.fired,
        }


def model_names(name: str) -> set[str]:
    """A model name as rules see it: a base model under its snapshot id and every alias."""
    base = resolve_base(name)
    return {name} if base is None else {name, base.id, *base.aliases}


@dataclass
class FaultPlane:
    """Rules, counters and the request log, behind their own lock (requests run on many threads)."""

    _lock: threading.Lock = field(default_factory=threading.Lock)
    _rules: list[Rule] = field(default_factory=list)
    _next_id: int = 1
    _requests: dict[str, int] = field(default_factory=dict)
    _faults: dict[str, int] = field(default_factory=dict)
    _log: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=LOG_SIZE))
    _seq: int = 0

    # rules
    def add(self, specs: Iterable[FaultRuleSpec]) -> list[dict[str, Any]]:
        with self._lock:
            added = []
            for spec in specs:
                rule = Rule(f"flt_{self._next_id}", spec, random.Random(spec.seed))
                self._next_id += 1
                self._rules.append(rule)
                added.append(rule.to_dict())
            return added

    def rules(self) -> list[dict[str, Any]]:
        with self._lock:
            return [rule.to_dict() for rule in self._rules]

    def clear(self) -> int:
        with self._lock:
            count = len(self._rules)
            self._rules.clear()
            return count

    def remove(self, rule_id: str) -> bool:
        with self._lock:
            kept = [rule for rule in self._rules if rule.id != rule_id]
            found = len(kept) != len(self._rules)
            self._rules = kept
            return found

    def needs_model(self, method: str, path: str, route: str | None) -> bool:
        """Whether some live rule for this request is scoped by model (so the body must be read)."""
        with self._lock:
            return any(
                rule.spec.model is not None and rule.remaining() != 0 and rule.selects(method, path, route)
                for rule in self._rules
            )

    def select(self, method: str, path: str, route: str | None, models: set[str] | None) -> Fired | None:
        with self._lock:
            for rule in self._rules:
                if not rule.selects(method, path, route):
                    continue
                if rule.spec.model is not None and (models is None or rule.spec.model not in models):
                    continue
                rule.matched += 1
                if rule.remaining() == 0 or rule.matched <= rule.spec.skip:
                    continue
                if rule.spec.probability < 1 and rule.rng.random() >= rule.spec.probability:
                    continue
                rule.fired += 1
                return Fired(rule.spec, rule.id)
            return None

    # observation
    def record(self, method: str, path: str, route: str | None) -> dict[str, Any]:
        """Count a request and start its log entry (the caller fills in `fault` and `status`)."""
        key = f"{method} {route or path}"
        with self._lock:
            self._requests[key] = self._requests.get(key, 0) + 1
            self._seq += 1
            entry: dict[str, Any] = {
                "seq": self._seq,
                "at": time.time(),
                "method": method,
                "path": path,
                "route": route,
                "fault": None,
                "status": None,
            }
            self._log.append(entry)
            return entry

    def record_fault(self, entry: dict[str, Any], fired: Fired) -> None:
        key = f"{entry['method']} {entry['route'] or entry['path']}"
        with self._lock:
            self._faults[key] = self._faults.get(key, 0) + 1
            entry["fault"] = {"source": fired.source, "action": fired.action.action}
            if fired.action.status is not None:
                entry["fault"]["status"] = fired.action.status

    def record_status(self, entry: dict[str, Any], status: int) -> None:
        with self._lock:
            entry["status"] = status

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "requests": dict(self._requests),
                "faults": dict(self._faults),
                "total_requests": sum(self._requests.values()),
                "total_faults": sum(self._faults.values()),
            }

    def requests_log(self, limit: int) -> list[dict[str, Any]]:
        with self._lock:
            entries = list(self._log)[-limit:] if limit else []
            return [{**entry, "fault": dict(entry["fault"]) if entry["fault"] else None} for entry in entries]

    def reset_stats(self) -> None:
        with self._lock:
            self._requests.clear()
            self._faults.clear()
            self._log.clear()
