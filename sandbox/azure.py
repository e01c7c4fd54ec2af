"""The sandbox as an Azure OpenAI resource (`tuneforge sandbox --flavor azure`).

Data plane: the same files, fine-tuning and models API under `/openai/…`, authenticated by an
`api-key` header (a bearer key is refused, as Azure refuses an OpenAI key) and requiring
`?api-version=` on every call; chat is `/openai/deployments/{deployment}/chat/completions`,
served by whatever model that deployment holds. Management plane: the deployment step a tuned
model needs before it serves, `PUT`/`GET /subscriptions/…/Microsoft.CognitiveServices/accounts/
{resource}/deployments/{name}` with a bearer token; a new deployment reports `Creating` and is
`Succeeded` from the next read, so a client has to come back for it, as with Azure. Tokens for
it come from a stand-in of Entra ID's client-credentials grant (`POST /{tenant}/oauth2/v2.0/token`).
"""

from __future__ import annotations

import threading
from typing import Annotated, Any

from fastapi import APIRouter, Body, FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers, QueryParams
from starlette.types import ASGIApp, Receive, Scope, Send

from sandbox import chat, files, ids, jobs, models
from sandbox.errors import ApiError
from sandbox.store import store_of

DATA_PREFIX = "/openai"
MANAGEMENT_PREFIX = "/subscriptions"
ACCESS_DENIED = (
    "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid "
    "key for an active subscription and use a correct regional API endpoint for your resource."
)


class Deployments:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: dict[str, dict[str, Any]] = {}
        # What data-plane calls looked like, so tests can see the URL shape and the auth used.
        self.calls: list[dict[str, Any]] = []
        # Management calls, and whether their bearer was a token this sandbox issued.
        self.management_calls: list[dict[str, Any]] = []
        self.issued: set[str] = set()

    def put(self, name: str, model: str, sku: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            existing = self._items.get(name)
            if existing is not None:
                return existing
            item = {"name": name, "model": model, "sku": sku, "state": "Creating"}
            self._items[name] = item
            return item

    def get(self, name: str, *, advance: bool) -> dict[str, Any] | None:
        with self._lock:
            item = self._items.get(name)
            if item is not None and advance:
                item["state"] = "Succeeded"
            return item

    def model_of(self, name: str) -> str | None:
        item = self.get(name, advance=False)
        return item["model"] if item is not None and item["state"] == "Succeeded" else None


class AzureAuthMiddleware:
    """`api-key` and `api-version` on the data plane, a bearer token on the management plane."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not path.startswith((DATA_PREFIX, MANAGEMENT_PREFIX)):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        query = QueryParams(scope.get("query_string", b"").decode())
        error: ApiError | None = None
        if not query.get("api-version"):
            error = ApiError(404, "Resource not found", code="404")
        elif path.startswith(DATA_PREFIX):
            if not headers.get("api-key"):
                error = ApiError(401, ACCESS_DENIED, code="401")
            else:
                deployments: Deployments = scope["app"].state.deployments
                deployments.calls.append(
                    {
                        "method": scope["method"],
                        "path": path,
                        "api_version": query.get("api-version"),
                        "bearer": "authorization" in headers,
                    }
                )
                del deployments.calls[:-500]
        elif headers.get("authorization", "").lower().startswith("bearer "):
            deployments = scope["app"].state.deployments
            token = headers["authorization"][7:].strip()
            deployments.management_calls.append(
                {"method": scope["method"], "path": path, "issued_token": token in deployments.issued}
            )
            del deployments.management_calls[:-500]
        else:
            error = ApiError(
                401, "Authentication failed: the request has no bearer token.", code="AuthenticationFailed"
            )
        if error is not None:
            await error.response()(scope, receive, send)
            return
        await self.app(scope, receive, send)


management = APIRouter(
    prefix="/subscriptions/{subscription}/resourceGroups/{group}/providers/Microsoft.CognitiveServices"
    "/accounts/{resource}/deployments"
)
serving = APIRouter(prefix=DATA_PREFIX)


def _deployments(request: Request) -> Deployments:
    found: Deployments = request.app.state.deployments
    return found


def _deployment_dict(request: Request, item: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": request.url.path,
        "type": "Microsoft.CognitiveServices/accounts/deployments",
        "name": item["name"],
        "sku": item["sku"],
        "properties": {
            "model": {"format": "OpenAI", "name": item["model"], "version": "1"},
            "provisioningState": item["state"],
        },
    }


@management.put("/{name}")
def put_deployment(request: Request, name: str, body: Annotated[dict[str, Any], Body()]) -> dict[str, Any]:
    model = ((body.get("properties") or {}).get("model") or {}).get("name")
    if not isinstance(model, str) or not model:
        raise ApiError(400, "properties.model.name is required.", code="InvalidRequestBody")
    store = store_of(request)
    if store.catalog.resolve(model) is None and store.find_tuned(model) is None:
        raise ApiError(
            400, f"The model '{model}' does not exist in this resource.", code="DeploymentModelNotSupported"
        )
    item = _deployments(request).put(name, model, body.get("sku") or {"name": "standard", "capacity": 1})
    if item["model"] != model:
        raise ApiError(409, f"Deployment '{name}' already serves {item['model']}.", code="Conflict")
    return _deployment_dict(request, item)


@management.get("/{name}")
def get_deployment(request: Request, name: str) -> dict[str, Any]:
    item = _deployments(request).get(name, advance=True)
    if item is None:
        raise ApiError(404, f"Deployment '{name}' was not found.", code="DeploymentNotFound")
    return _deployment_dict(request, item)


@serving.post("/deployments/{deployment}/chat/completions", response_model=None)
def deployment_chat(request: Request, deployment: str, body: Annotated[dict[str, Any], Body()]) -> Any:
    model = _deployments(request).model_of(deployment)
    if model is None and store_of(request).catalog.resolve(deployment) is not None:
        model = deployment  # base models are served under a deployment of their own name
    if model is None:
        raise ApiError(
            404,
            "The API deployment for this resource does not exist. If you created the deployment within "
            "the last 5 minutes, please wait a moment and try again.",
            code="DeploymentNotFound",
        )
    return chat.create_chat_completion(request, {**body, "model": model})


token_issuer = APIRouter()


@token_issuer.post("/{tenant}/oauth2/v2.0/token")
async def issue_token(request: Request, tenant: str) -> Any:
    """Entra ID's client-credentials grant, for the management plane's scope."""
    form = await request.form()
    wanted = (
        form.get("grant_type") == "client_credentials" and form.get("client_id") and form.get("client_secret")
    )
    if not wanted or not str(form.get("scope", "")).endswith("/.default"):
        return JSONResponse(
            {
                "error": "invalid_request",
                "error_description": "client_credentials with a .default scope required",
            },
            status_code=400,
        )
    token = f"sandbox-arm-{tenant}-{ids.random_token(24)}"
    _deployments(request).issued.add(token)
    return {"token_type": "Bearer", "expires_in": 3599, "access_token": token}


def install(app: FastAPI) -> None:
    app.state.deployments = Deployments()
    for module in (files, jobs, models):
        app.include_router(module.router, prefix=DATA_PREFIX)
    app.include_router(serving)
    app.include_router(management)
    app.include_router(token_issuer)

    @app.get("/sandbox/azure/calls")
    def calls() -> dict[str, Any]:
        deployments = app.state.deployments
        return {
            "object": "list",
            "data": list(deployments.calls),
            "management": list(deployments.management_calls),
        }

    app.add_middleware(AzureAuthMiddleware)
