"""The HTTP API (FastAPI on uvicorn): JSON in and out, errors as {"detail": "one line"}.

FastAPI because its pydantic request models give field-level validation (mapped here to
400s that name the field) and an interactive API page (/docs) documenting every route;
uvicorn because it is the reference ASGI server, with graceful SIGTERM handling.
"""
from __future__ import annotations

import asyncio
import contextlib
import hmac
import time
from typing import Annotated

import fastapi
from fastapi import exceptions as fastapi_exceptions
from fastapi import responses
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

from prompt_tuning_jax.serving.service import ServeError, Service

NonEmptyTexts = Annotated[list[StrictStr], Field(min_length=1)]


class _Request(BaseModel):
  model_config = ConfigDict(extra="forbid")


class ScoreRequest(_Request):
  prompt: StrictStr = Field(description="a registered prompt's name")
  inputs: NonEmptyTexts
  targets: NonEmptyTexts = Field(description="one target per input")


class ScoreResponse(BaseModel):
  scores: list[float] = Field(description="summed target log-likelihood, EOS included (as the score command)")


class ClassifyRequest(_Request):
  prompt: StrictStr
  inputs: NonEmptyTexts
  candidates: NonEmptyTexts = Field(description="the labels every input is ranked among")


class ClassifyResponse(BaseModel):
  labels: list[str] = Field(description="the most likely candidate per input (rank classification)")
  scores: list[list[float]] = Field(description="[input][candidate] summed log-likelihood, EOS included")


class GenerateRequest(_Request):
  prompt: StrictStr
  inputs: NonEmptyTexts
  max_decode_length: StrictInt | None = Field(None, ge=1, description="tokens to decode at most (EOS included)")


class GenerateResponse(BaseModel):
  outputs: list[str] = Field(description="greedy decoding, as the infer command's --mode=greedy")


class RegisterRequest(_Request):
  path: StrictStr = Field(description="a prompt file or folder inside --prompt_dir, relative to it")
  name: StrictStr | None = Field(None, description="default: the file or folder name without its extension")


def _field(loc: tuple) -> str:
  parts = [str(p) for p in loc if p != "body"]
  return ".".join(parts) if parts else "body"


def create_app(service: Service, *, admin_token: str | None = None, metrics=None) -> fastapi.FastAPI:
  """The routes over one `Service`; its scheduler drains in the app's shutdown."""

  @contextlib.asynccontextmanager
  async def lifespan(_app):
    yield
    await asyncio.get_running_loop().run_in_executor(None, service.stop)

  app = fastapi.FastAPI(title="prompt_tuning_jax serve", lifespan=lifespan,
                        description="One frozen T5 serving many soft prompts, every prompt mixed in one batch.")

  @app.exception_handler(fastapi_exceptions.RequestValidationError)
  async def _invalid(_request, exc: fastapi_exceptions.RequestValidationError):
    errors = exc.errors()
    first = errors[0] if errors else {"loc": ("body",), "msg": "invalid request", "type": ""}
    if first.get("type") == "json_invalid":
      message = f"malformed JSON body: {first.get('ctx', {}).get('error', first['msg'])}"
    else:
      message = f"field '{_field(tuple(first.get('loc', ())))}': {first['msg']}"
    if len(errors) > 1:
      message += f" (and {len(errors) - 1} more)"
    return responses.JSONResponse({"detail": message}, status_code=400)

  @app.exception_handler(ServeError)
  async def _serve_error(_request, exc: ServeError):
    return responses.JSONResponse({"detail": exc.message}, status_code=exc.status, headers=exc.headers)

  if metrics is not None:
    @app.middleware("http")
    async def _observe(request: fastapi.Request, call_next):
      start = time.perf_counter()
      response = await call_next(request)
      route = request.scope.get("route")
      endpoint = getattr(route, "path", "other")
      metrics.requests.labels(endpoint, str(response.status_code)).inc()
      metrics.latency.labels(endpoint).observe(time.perf_counter() - start)
      return response

  def admin(authorization: Annotated[str | None, fastapi.Header()] = None) -> None:
    if admin_token is None:
      return
    given = (authorization or "").removeprefix("Bearer ").strip()
    if not authorization or not hmac.compare_digest(given.encode(), admin_token.encode()):
      raise ServeError(401, "admin endpoint: send 'Authorization: Bearer <--admin_token>'",
                       {"WWW-Authenticate": "Bearer"})

  @app.post("/v1/score", response_model=ScoreResponse, summary="Score targets under a prompt")
  async def score(req: ScoreRequest):
    """Summed log-likelihood of each target given its input (EOS included): the numbers of
    `python -m prompt_tuning_jax.score` for the same pairs."""
    return {"scores": await service.score(req.prompt, req.inputs, req.targets)}

  @app.post("/v1/classify", response_model=ClassifyResponse, summary="Rank classification")
  async def classify(req: ClassifyRequest):
    """Each input's candidates scored as `eval --mode=rank` does; the best is its label."""
    labels, scores = await service.classify(req.prompt, req.inputs, req.candidates)
    return {"labels": labels, "scores": scores}

  @app.post("/v1/generate", response_model=GenerateResponse, summary="Greedy decoding")
  async def generate(req: GenerateRequest):
    """Greedy decoding up to max_decode_length tokens, as `infer --mode=greedy`."""
    return {"outputs": await service.generate(req.prompt, req.inputs, req.max_decode_length)}

  @app.get("/v1/prompts", summary="List registered prompts")
  async def list_prompts():
    return {"prompts": service.registry.listing(), "capacity": service.registry.capacity}

  @app.post("/v1/prompts", summary="Register a prompt from a path inside --prompt_dir (admin)",
            dependencies=[fastapi.Depends(admin)])
  async def register(req: RegisterRequest):
    """Loads any format `export` writes; a name already registered is replaced (requests
    already queued keep the old prompt)."""
    return await asyncio.get_running_loop().run_in_executor(None, service.register, req.path, req.name)

  @app.delete("/v1/prompts/{name}", summary="Unregister a prompt (admin)", dependencies=[fastapi.Depends(admin)])
  async def unregister(name: str):
    """Requests already queued for it still finish with it."""
    service.unregister(name)
    return {"deleted": name}

  @app.get("/healthz", summary="Liveness")
  async def healthz():
    return {"status": "ok"}

  @app.get("/readyz", summary="Readiness: warmed and not draining")
  async def readyz():
    if service.draining:
      raise ServeError(503, "draining: shutting down")
    return {"status": "ready", "prompts": len(service.registry.names())}

  @app.get("/metrics", summary="Prometheus metrics")
  async def prometheus():
    if metrics is None:
      raise ServeError(404, "metrics are off")
    body, content_type = metrics.exposition()
    return responses.Response(body, media_type=content_type)

  return app
