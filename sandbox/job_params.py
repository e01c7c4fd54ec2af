"""Parsing `POST /fine_tuning/jobs` bodies and resolving "auto" hyperparameters.

Limits follow `CreateFineTuningJobRequest` in the OpenAPI subset; the epoch rule is the
cookbook's default-epoch heuristic (training-data.md §5), which is what OpenAI documents.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

from sandbox.catalog import SANDBOX_CATALOG, BaseModel, Catalog
from sandbox.errors import ApiError, bad_request

AUTO = "auto"
HP_KEYS = ("batch_size", "learning_rate_multiplier", "n_epochs")
DEFAULT_LR_MULTIPLIER = 1.8
DEFAULT_BETA = 0.1
MAX_SEED = 2147483647


@dataclass
class JobRequest:
    model: str  # what the job echoes as `model`: a snapshot, or the ft model being tuned further
    base: BaseModel
    training_file: str
    validation_file: str | None
    suffix: str | None
    seed: int
    metadata: dict[str, str] | None
    integrations: list[Any] | None
    method_type: str
    hyperparameters: dict[str, Any]  # as requested, "auto" where not given


def parse_job_request(body: dict[str, Any], catalog: Catalog = SANDBOX_CATALOG) -> JobRequest:
    model_name = _required_str(body, "model")
    base = catalog.resolve(model_name) or catalog.base_of_ft_name(model_name)
    if base is None:
        raise ApiError(
            400,
            f"Model {model_name} is not available for fine-tuning or does not exist.",
            param="model",
            code="model_not_found",
        )
    model = base.id if not model_name.startswith("ft:") else model_name
    training_file = _required_str(body, "training_file")
    validation_file = _optional_str(body, "validation_file")
    suffix = _optional_str(body, "suffix")
    if suffix is not None and not 1 <= len(suffix) <= 64:
        raise bad_request("suffix must be between 1 and 64 characters long.", param="suffix")
    seed = body.get("seed")
    if seed is None:
        seed = random.randint(0, MAX_SEED)
    elif not _is_int(seed) or not 0 <= seed <= MAX_SEED:
        raise bad_request(f"seed must be an integer between 0 and {MAX_SEED}.", param="seed")
    method_type, hyperparameters = _parse_method(body)
    if method_type not in base.methods:
        raise bad_request(
            f"Model {base.id} does not support the '{method_type}' fine-tuning method.", param="method.type"
        )
    return JobRequest(
        model=model,
        base=base,
        training_file=training_file,
        validation_file=validation_file,
        suffix=suffix,
        seed=seed,
        metadata=parse_metadata(body.get("metadata")),
        integrations=body.get("integrations"),
        method_type=method_type,
        hyperparameters=hyperparameters,
    )


def parse_metadata(value: Any) -> dict[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise bad_request("metadata must be an object of string keys and string values.", param="metadata")
    if len(value) > 16:
        raise bad_request("metadata may hold at most 16 key-value pairs.", param="metadata")
    for key, item in value.items():
        if len(key) > 64 or len(item) > 512:
            raise bad_request(
                "metadata keys are limited to 64 and values to 512 characters.", param="metadata"
            )
    return dict(value)


def _parse_method(body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    legacy = body.get("hyperparameters") or {}
    method = body.get("method") or {"type": "supervised"}
    if not isinstance(legacy, dict):
        raise bad_request("hyperparameters must be an object.", param="hyperparameters")
    if not isinstance(method, dict):
        raise bad_request("method must be an object.", param="method")
    method_type = method.get("type", "supervised")
    if method_type not in ("supervised", "dpo", "reinforcement"):
        raise bad_request(f"Invalid method type: {method_type!r}.", param="method.type")
    section = method.get(method_type) or {}
    requested = (section.get("hyperparameters") or {}) if isinstance(section, dict) else {}
    if not isinstance(requested, dict):
        raise bad_request(
            "method hyperparameters must be an object.", param=f"method.{method_type}.hyperparameters"
        )
    # The deprecated top-level field still works; the method's own values win where both are given.
    merged = {key: AUTO for key in HP_KEYS} | {k: v for k, v in legacy.items() if v is not None}
    merged |= {k: v for k, v in requested.items() if v is not None}
    if method_type == "dpo":
        merged.setdefault("beta", AUTO)
    _check_hyperparameters(merged, method_type)
    return method_type, merged


def _check_hyperparameters(hp: dict[str, Any], method_type: str) -> None:
    param = f"method.{method_type}.hyperparameters"
    checks = {
        "batch_size": lambda v: _is_int(v) and 1 <= v <= 256,
        "learning_rate_multiplier": lambda v: _is_number(v) and v > 0,
        "n_epochs": lambda v: _is_int(v) and 1 <= v <= 50,
        "beta": lambda v: _is_number(v) and 0 < v <= 2,
    }
    for key, value in hp.items():
        check = checks.get(key) if key != "beta" or method_type == "dpo" else None
        if check is None:
            raise bad_request(f"Unknown hyperparameter {key!r}.", param=f"{param}.{key}")
        if value != AUTO and not check(value):
            raise bad_request(f"Invalid value for hyperparameter {key!r}: {value!r}.", param=f"{param}.{key}")


def default_epochs(n_examples: int) -> int:
    """Cookbook rule: aim for ~3 epochs, but at least 100 and at most 25,000 example-passes."""
    if n_examples <= 0:
        return 1
    if n_examples * 3 < 100:
        return min(25, 100 // n_examples)
    if n_examples * 3 > 25000:
        return max(1, 25000 // n_examples)
    return 3


def resolve_hyperparameters(requested: dict[str, Any], n_examples: int) -> dict[str, Any]:
    """Concrete values for every "auto", the way a finished job reports them."""
    resolved = dict(requested)
    if resolved.get("n_epochs") == AUTO:
        resolved["n_epochs"] = default_epochs(n_examples)
    if resolved.get("batch_size") == AUTO:
        # OpenAI scales the batch with the data (≈0.2 % of examples); small sets train one at a time.
        resolved["batch_size"] = max(1, min(256, round(n_examples / 500)))
    if resolved.get("learning_rate_multiplier") == AUTO:
        resolved["learning_rate_multiplier"] = DEFAULT_LR_MULTIPLIER
    if resolved.get("beta") == AUTO:
        resolved["beta"] = DEFAULT_BETA
    return resolved


def steps_per_epoch(n_examples: int, batch_size: int) -> int:
    return max(1, math.ceil(n_examples / batch_size))


def _required_str(body: dict[str, Any], key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value:
        raise bad_request(
            f"Missing required parameter: '{key}'.", param=key, code="missing_required_parameter"
        )
    return value


def _optional_str(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is not None and not isinstance(value, str):
        raise bad_request(f"Invalid type for '{key}': expected a string.", param=key)
    return value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
