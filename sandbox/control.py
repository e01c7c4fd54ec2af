"""`/sandbox/*`: the fault control plane and request stats, for tests (shapes: `faults.py`).

Outside `/v1`, so no bearer key is needed: the sandbox is a local test double.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Request

from sandbox.errors import not_found
from sandbox.faults import LOG_SIZE, FaultPlane, FaultSpecError, parse_rules
from sandbox.store import store_of

router = APIRouter(prefix="/sandbox")


def plane_of(request: Request) -> FaultPlane:
    plane: FaultPlane = request.app.state.faults
    return plane


@router.post("/faults")
def add_faults(request: Request, body: Annotated[Any, Body()]) -> dict[str, Any]:
    try:
        specs = parse_rules(body)
    except FaultSpecError as exc:
        raise exc.api_error() from None
    return {"object": "list", "data": plane_of(request).add(specs)}


@router.get("/faults")
def list_faults(request: Request) -> dict[str, Any]:
    return {"object": "list", "data": plane_of(request).rules()}


@router.delete("/faults")
def clear_faults(request: Request) -> dict[str, Any]:
    return {"deleted": plane_of(request).clear()}


@router.delete("/faults/{rule_id}")
def delete_fault(request: Request, rule_id: str) -> dict[str, Any]:
    if not plane_of(request).remove(rule_id):
        raise not_found(f"No such fault rule: {rule_id}", param="rule_id")
    return {"id": rule_id, "deleted": True}


@router.get("/stats")
def stats(request: Request) -> dict[str, Any]:
    return {**plane_of(request).stats(), **store_of(request).counts()}


@router.delete("/stats")
def reset_stats(request: Request) -> dict[str, Any]:
    plane_of(request).reset_stats()
    return {"reset": True}


@router.get("/requests")
def requests_log(
    request: Request, limit: Annotated[int, Query(ge=1, le=LOG_SIZE)] = LOG_SIZE
) -> dict[str, Any]:
    return {"object": "list", "data": plane_of(request).requests_log(limit)}
