"""The HTTP app and scheduler in process (httpx over ASGI), on a stand-in engine whose
forward can be held: queue bounds (503 + Retry-After), timeouts (504), admin tokens,
a DELETE/re-register while a request is in flight, and which rows share a batch under
each batching policy. The real model is served in test_server.py."""
import asyncio
import threading

import httpx
import numpy as np
import pytest

from prompt_tuning_jax.prompt import files as prompt_files
from prompt_tuning_jax.serving import app as app_lib
from prompt_tuning_jax.serving import engine as engine_lib
from prompt_tuning_jax.serving import metrics as metrics_lib
from prompt_tuning_jax.serving import registry as registry_lib
from prompt_tuning_jax.serving import service as service_lib
from prompt_tuning_jax.text import vocab as vocab_lib

D = 8
Z = 1000 * int(np.count_nonzero(vocab_lib.encode_batch(vocab_lib.load_vocabulary(), ["z"])))  # a target's score part


class HeldEngine:
  """Scores a row as its prompt's marker value (bank[row, 0, 0]) + 1000 * its target
  tokens; `gate` holds every forward until set. Records each batch's prompt rows."""

  def __init__(self):
    self.buckets = engine_lib.Buckets(rows=(4, 16), inputs=(16, 32), targets=(8,), candidates=(4,))
    self.gate = threading.Event()
    self.gate.set()
    self.batches: list[list[int]] = []

  def set_bank(self, bank):
    self.bank = np.array(bank)

  def warm(self, capacity=None, log=None):
    return 0

  def run(self, kind, inputs, prompt_rows, extra=None, decode_length=0):
    assert self.gate.wait(20)
    bank = self.bank
    real = inputs.shape[0] - int(np.sum(np.all(inputs == 0, axis=1)))
    self.batches.append(prompt_rows[:real].tolist())
    marker = bank[prompt_rows, 0, 0]
    if kind == "score":
      return marker + 1000 * np.count_nonzero(extra, axis=1)
    if kind == "classify":
      return marker[:, None] + np.count_nonzero(extra, axis=2)
    return np.ones((inputs.shape[0], decode_length), np.int32), marker


def _write(directory, name, marker):
  prompt_files.save_npy(directory / f"{name}.npy", np.full((2, D), marker, np.float32))


@pytest.fixture
def make(tmp_path):
  d = tmp_path / "prompts"
  d.mkdir()
  _write(d, "a", 1.0)
  _write(d, "b", 2.0)
  _write(d, "c", 3.0)

  def build(token=None, **limits):
    reg = registry_lib.PromptRegistry(str(d), emb_dim=D, capacity=4)
    reg.scan()
    eng = HeldEngine()
    eng.set_bank(reg.bank())
    limits.setdefault("max_batch_rows", 16)
    core = service_lib.Service(reg, eng, vocab_lib.load_vocabulary(), service_lib.Limits(**limits),
                               metrics_lib.Metrics())
    core.start()
    app = app_lib.create_app(core, admin_token=token, metrics=core.metrics)
    return core, eng, httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")
  yield build


def _score(prompt, n=1):
  return {"prompt": prompt, "inputs": ["x y"] * n, "targets": ["z"] * n}


def test_queue_bound_answers_503_with_retry_after(make):
  core, eng, client = make(max_queue_rows=4, max_wait_ms=0)

  async def go():
    eng.gate.clear()
    first = asyncio.create_task(client.post("/v1/score", json=_score("a", 3)))
    await asyncio.sleep(0.2)
    busy = await client.post("/v1/score", json=_score("b", 2))
    eng.gate.set()
    return busy, await first
  busy, first = asyncio.run(go())
  assert busy.status_code == 503 and busy.headers["retry-after"] == "1"
  assert "--max_queue_rows=4" in busy.json()["detail"]
  assert first.status_code == 200 and len(first.json()["scores"]) == 3
  core.stop()


def test_timeout_answers_504_and_releases_the_prompt(make):
  core, eng, client = make(request_timeout_s=0.3, max_wait_ms=0)

  async def go():
    eng.gate.clear()
    late = await client.post("/v1/score", json=_score("a"))
    eng.gate.set()
    return late, await client.post("/v1/score", json=_score("a"))
  late, ok = asyncio.run(go())
  assert late.status_code == 504 and "--request_timeout_s" in late.json()["detail"]
  assert ok.status_code == 200
  core.stop()
  assert core.registry._pins == {} and core.scheduler.outstanding_rows == 0


def test_admin_endpoints_need_the_bearer_token(make):
  core, _, client = make(token="s3cret")

  async def go():
    no = await client.post("/v1/prompts", json={"path": "a.npy", "name": "a2"})
    wrong = await client.delete("/v1/prompts/a", headers={"Authorization": "Bearer nope"})
    ok = await client.post("/v1/prompts", json={"path": "a.npy", "name": "a2"},
                           headers={"Authorization": "Bearer s3cret"})
    outside = await client.post("/v1/prompts", json={"path": "../x.npy"}, headers={"Authorization": "Bearer s3cret"})
    listed = await client.get("/v1/prompts")
    return no, wrong, ok, outside, listed
  no, wrong, ok, outside, listed = asyncio.run(go())
  assert no.status_code == 401 and no.headers["www-authenticate"] == "Bearer"
  assert wrong.status_code == 401
  assert ok.status_code == 200 and ok.json()["name"] == "a2"
  assert outside.status_code == 400 and "field 'path'" in outside.json()["detail"]
  assert [p["name"] for p in listed.json()["prompts"]] == ["a", "a2", "b", "c"]
  core.stop()


def test_delete_and_reregister_while_in_flight_keep_the_pinned_prompt(make, tmp_path):
  core, eng, client = make(max_wait_ms=0)
  _write(tmp_path / "prompts", "new_a", 7.0)

  async def go():
    eng.gate.clear()
    flying = asyncio.create_task(client.post("/v1/score", json=_score("a")))
    await asyncio.sleep(0.2)
    deleted = await client.delete("/v1/prompts/a")
    gone = await client.post("/v1/score", json=_score("a"))
    again = await client.post("/v1/prompts", json={"path": "new_a.npy", "name": "a"})
    eng.gate.set()
    return deleted, gone, again, await flying, await client.post("/v1/score", json=_score("a"))
  deleted, gone, again, flying, after = asyncio.run(go())
  assert deleted.status_code == 200 and gone.status_code == 404
  assert again.status_code == 200
  assert flying.status_code == 200 and flying.json()["scores"] == [1.0 + Z]   # old prompt "a" (marker 1)
  assert after.json()["scores"] == [7.0 + Z]                                   # the new "a"
  core.stop()


@pytest.mark.parametrize("policy,expected", [("mixed", [[0, 1, 2]]), ("per_prompt", [[0], [1], [2]]),
                                             ("single", [[0], [1], [2]])])
def test_batching_policies(make, policy, expected):
  core, eng, client = make(policy=policy, max_wait_ms=300)

  async def go():
    eng.gate.clear()
    tasks = [asyncio.create_task(client.post("/v1/score", json=_score(p))) for p in "abc"]
    await asyncio.sleep(0.1)
    eng.gate.set()
    return await asyncio.gather(*tasks)
  out = asyncio.run(go())
  assert [r.json()["scores"] for r in out] == [[1.0 + Z], [2.0 + Z], [3.0 + Z]]
  assert sorted(sorted(b) for b in eng.batches) == expected
  core.stop()


def test_bad_requests_are_400_naming_the_field(make):
  core, _, client = make()

  async def go():
    return [await client.post("/v1/score", content=b'{"prompt": "a", "inputs": [', headers={"content-type": "application/json"}),
            await client.post("/v1/score", json={"prompt": "a", "inputs": ["x"]}),
            await client.post("/v1/score", json={"prompt": 3, "inputs": ["x"], "targets": ["y"]}),
            await client.post("/v1/score", json={"prompt": "a", "inputs": "x", "targets": ["y"]}),
            await client.post("/v1/classify", json={"prompt": "a", "inputs": ["x"], "candidates": []}),
            await client.post("/v1/score", json={"prompt": "a", "inputs": ["x", "y"], "targets": ["y"]}),
            await client.post("/v1/generate", json={"prompt": "a", "inputs": ["x"], "max_decode_length": 0}),
            await client.post("/v1/generate", json={"prompt": "a", "inputs": ["x"], "beams": 3})]
  codes = asyncio.run(go())
  details = [r.json()["detail"] for r in codes]
  assert [r.status_code for r in codes] == [400] * 8, details
  assert details[0].startswith("malformed JSON body")
  for text, field in zip(details[1:], ["targets", "prompt", "inputs", "candidates", "targets", "max_decode_length",
                                       "beams"]):
    assert f"field '{field}" in text, text
  core.stop()
