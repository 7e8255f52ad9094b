"""A real server on loopback (a subprocess of `python -m prompt_tuning_jax.serve`) with the
bundled demo model and two prompts trained on the demo tasks (tests/testdata/serving,
made by tests/serving/make_prompts.py): every endpoint through httpx, /v1/score against the
`score` command, /v1/generate against the `infer` command, mixed-prompt batches against
one-at-a-time requests, the error answers, a bounded concurrent load, and SIGTERM draining
(last: it stops the module's server)."""
import json
import os
import pathlib
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import numpy as np
import pytest

from prompt_tuning_jax.prompt import files as prompt_files

pytestmark = pytest.mark.slow

REPO = pathlib.Path(__file__).resolve().parents[2]
PROMPTS = REPO / "tests" / "testdata" / "serving"
CHECKPOINT = REPO / "prompt_tuning_jax" / "assets" / "demo_model" / "checkpoint_1500"
MODEL_FLAGS = ["--gin_file=models/demo.gin", f"--gin.CHECKPOINT_PATH={CHECKPOINT}"]
TOKEN = "test-admin-token"
# Demo-task rows (five distinct words of tasks/demo.py's vocabulary, no task prefix).
WORDS = "red blue green black white pink brown gold cat dog fish bird horse cow bear apple".split()
ROWS = [" ".join(random.Random(i).sample(WORDS, 5)) for i in range(12)]


def _env() -> dict:
  env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3")
  env.pop("XLA_FLAGS", None)  # one CPU device: faster start-up on a small box
  return env


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
  """The prompt registry (last_word as .npy, first_word as a PEFT adapter folder) and a
  running server; yields (base url, process, log path, prompt dir)."""
  root = tmp_path_factory.mktemp("serve")
  prompt_dir = root / "prompts"
  prompt_dir.mkdir()
  shutil.copy(PROMPTS / "last_word.npy", prompt_dir / "last_word.npy")
  prompt_files.save_peft_adapter(prompt_dir / "first_word", np.load(PROMPTS / "first_word.npy"),
                                 base_model_name_or_path=None)
  port = _free_port()
  log = root / "server.log"
  cmd = [sys.executable, "-m", "prompt_tuning_jax.serve", *MODEL_FLAGS, f"--prompt_dir={prompt_dir}",
         f"--port={port}", "--row_buckets=4,16", "--max_batch_rows=16", "--input_buckets=16,32",
         "--target_buckets=8", "--candidate_buckets=8", "--max_wait_ms=30", "--max_queue_rows=512",
         f"--admin_token={TOKEN}"]
  with open(log, "w") as out:
    proc = subprocess.Popen(cmd, cwd=REPO, env=_env(), stdout=out, stderr=subprocess.STDOUT)
  url = f"http://127.0.0.1:{port}"
  deadline = time.time() + 300
  while time.time() < deadline:
    if proc.poll() is not None:
      pytest.fail(f"server exited {proc.returncode} at start-up:\n{log.read_text()[-3000:]}")
    try:
      if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
        break
    except httpx.TransportError:
      pass
    time.sleep(0.5)
  else:
    proc.kill()
    pytest.fail(f"server not ready in 300 s:\n{log.read_text()[-3000:]}")
  yield url, proc, log, prompt_dir
  if proc.poll() is None:
    proc.kill()
    proc.wait()


@pytest.fixture
def client(server):
  with httpx.Client(base_url=server[0], timeout=60) as c:
    yield c


def _post(client, path, body, **kw):
  r = client.post(path, json=body, **kw)
  assert r.status_code == 200, r.text
  return r.json()


def test_startup_says_what_it_loaded_and_where_it_listens(server):
  url, _, log, prompt_dir = server
  text = log.read_text()
  assert f"prompt 'last_word' <- {os.path.realpath(prompt_dir)}/last_word.npy (10, 64)" in text
  assert f"prompt 'first_word' <- {os.path.realpath(prompt_dir)}/first_word (10, 64)" in text
  assert f"listening on {url}" in text and "compiled 12 shapes" in text


def test_every_endpoint_is_documented_and_health_answers(client):
  spec = client.get("/openapi.json").json()
  paths = {(p, m) for p, ms in spec["paths"].items() for m in ms}
  for route in [("/v1/score", "post"), ("/v1/classify", "post"), ("/v1/generate", "post"), ("/v1/prompts", "get"),
                ("/v1/prompts", "post"), ("/v1/prompts/{name}", "delete"), ("/healthz", "get"), ("/readyz", "get"),
                ("/metrics", "get")]:
    assert route in paths
  assert "swagger" in client.get("/docs").text.lower()
  assert client.get("/healthz").json() == {"status": "ok"}
  assert client.get("/readyz").json() == {"status": "ready", "prompts": 2}
  listed = client.get("/v1/prompts").json()
  assert [p["name"] for p in listed["prompts"]] == ["first_word", "last_word"] and listed["capacity"] == 16


def test_score_equals_the_score_command(client, server, tmp_path):
  pairs = [(row, t) for row in ROWS[:5] for t in (row.split()[0], row.split()[-1], "a longer target here")]
  got = _post(client, "/v1/score", {"prompt": "first_word", "inputs": [i for i, _ in pairs],
                                     "targets": [t for _, t in pairs]})["scores"]
  src = tmp_path / "pairs.jsonl"
  src.write_text("".join(json.dumps({"inputs": i, "targets": t}) + "\n" for i, t in pairs))
  subprocess.run([sys.executable, "-m", "prompt_tuning_jax.score", *MODEL_FLAGS, f"--input_file={src}",
                  f"--output_file={tmp_path / 'out.jsonl'}", f"--prompt={server[3] / 'first_word'}"],
                 cwd=REPO, env=_env(), check=True, capture_output=True, timeout=300)
  want = [json.loads(line)["score"] for line in (tmp_path / "out.jsonl").read_text().splitlines()]
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  assert got[0] > got[1]  # the first-word prompt prefers the first word


def test_generate_equals_the_infer_command_on_mixed_prompts(client, server, tmp_path):
  lines = [{"inputs": row, "prompt": name} for row in ROWS[:6] for name in ("last_word", "first_word")]
  src = tmp_path / "in.jsonl"
  src.write_text("".join(json.dumps(line) + "\n" for line in lines))
  d = server[3]
  subprocess.run([sys.executable, "-m", "prompt_tuning_jax.infer", *MODEL_FLAGS, f"--input_file={src}",
                  f"--output_file={tmp_path / 'out.jsonl'}", f"--prompt=last_word={d / 'last_word.npy'}",
                  f"--prompt=first_word={d / 'first_word'}", "--mode=greedy", "--max_decode_length=8"],
                 cwd=REPO, env=_env(), check=True, capture_output=True, timeout=300)
  want = [json.loads(line)["outputs"][0]["output"] for line in (tmp_path / "out.jsonl").read_text().splitlines()]
  got = [_post(client, "/v1/generate", {"prompt": line["prompt"], "inputs": [line["inputs"]],
                                         "max_decode_length": 8})["outputs"][0] for line in lines]
  assert got == want
  assert got[:2] == [ROWS[0].split()[-1], ROWS[0].split()[0]]  # the prompts do their tasks


def test_classify_is_rank_classification(client):
  candidates = WORDS[:8]
  rows = [r for r in ROWS if r.split()[-1] in candidates][:4]
  out = _post(client, "/v1/classify", {"prompt": "last_word", "inputs": rows, "candidates": candidates})
  assert out["labels"] == [r.split()[-1] for r in rows]
  pairs = {"prompt": "last_word", "inputs": [r for r in rows for _ in candidates], "targets": candidates * len(rows)}
  scores = np.asarray(_post(client, "/v1/score", pairs)["scores"]).reshape(len(rows), len(candidates))
  np.testing.assert_allclose(out["scores"], scores, rtol=1e-5, atol=1e-5)


def _requests():
  """A mix of every endpoint and both prompts: (path, body)."""
  out = []
  for i, row in enumerate(ROWS):
    prompt = ("last_word", "first_word")[i % 2]
    out.append(("/v1/score", {"prompt": prompt, "inputs": [row], "targets": [row.split()[i % 5]]}))
    out.append(("/v1/classify", {"prompt": prompt, "inputs": [row], "candidates": row.split()}))
    out.append(("/v1/generate", {"prompt": prompt, "inputs": [row, ROWS[-1 - i]]}))
  return out


def _same(a: dict, b: dict) -> bool:
  if "scores" in a and "labels" not in a:
    return np.allclose(a["scores"], b["scores"], rtol=1e-5, atol=1e-5)
  if "labels" in a:
    return a["labels"] == b["labels"] and np.allclose(a["scores"], b["scores"], rtol=1e-5, atol=1e-5)
  return a == b


def _metric(text: str, name: str) -> float:
  return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


def test_mixed_prompt_batches_equal_single_requests(client, server):
  requests = _requests()
  alone = [_post(client, path, body) for path, body in requests]   # one at a time: one prompt per batch
  before = client.get("/metrics").text
  results = [None] * len(requests)

  def send(k):
    with httpx.Client(base_url=server[0], timeout=60) as c:
      results[k] = _post(c, *requests[k])
  threads = [threading.Thread(target=send, args=(k,)) for k in range(len(requests))]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  assert all(_same(a, b) for a, b in zip(alone, results)), [(a, b) for a, b in zip(alone, results) if not _same(a, b)]
  after = client.get("/metrics").text
  # some batch held rows of both prompts: fewer one-prompt batches than batches
  mixed = ((_metric(after, "ptj_batch_prompts_count") - _metric(before, "ptj_batch_prompts_count"))
           - (_metric(after, 'ptj_batch_prompts_bucket{kind="score",le="1.0"}')
              + _metric(after, 'ptj_batch_prompts_bucket{kind="classify",le="1.0"}')
              + _metric(after, 'ptj_batch_prompts_bucket{kind="generate",le="1.0"}')
              - _metric(before, 'ptj_batch_prompts_bucket{kind="score",le="1.0"}')
              - _metric(before, 'ptj_batch_prompts_bucket{kind="classify",le="1.0"}')
              - _metric(before, 'ptj_batch_prompts_bucket{kind="generate",le="1.0"}')))
  assert mixed >= 1


def test_error_answers(client):
  r = client.post("/v1/score", json={"prompt": "last_wrd", "inputs": ["a"], "targets": ["b"]})
  assert r.status_code == 404 and r.json()["detail"] == ("field 'prompt': unknown prompt 'last_wrd'; closest "
                                                         "registered: last_word, first_word")
  r = client.post("/v1/generate", json={"prompt": "last_word", "inputs": ["red " * 40]})
  assert r.status_code == 413 and "the limit is 32 tokens (--input_buckets)" in r.json()["detail"]
  r = client.post("/v1/classify", json={"prompt": "last_word", "inputs": ["a"], "candidates": WORDS[:9]})
  assert r.status_code == 413 and "the limit is 8" in r.json()["detail"]
  r = client.post("/v1/generate", json={"prompt": "last_word", "inputs": ["a"], "max_decode_length": 9})
  assert r.status_code == 413 and "the limit is 8" in r.json()["detail"]
  r = client.post("/v1/score", content=b"{not json", headers={"content-type": "application/json"})
  assert r.status_code == 400 and r.json()["detail"].startswith("malformed JSON body")
  r = client.post("/v1/score", json={"prompt": "last_word", "inputs": [], "targets": []})
  assert r.status_code == 400 and r.json()["detail"].startswith("field 'inputs'")
  r = client.post("/v1/classify", json={"prompt": "last_word", "inputs": [1], "candidates": ["a"]})
  assert r.status_code == 400 and r.json()["detail"].startswith("field 'inputs.0'")
  auth = {"Authorization": f"Bearer {TOKEN}"}
  assert client.post("/v1/prompts", json={"path": "last_word.npy", "name": "x"}).status_code == 401
  for bad in ("../last_word.npy", "/etc/passwd"):
    r = client.post("/v1/prompts", json={"path": bad}, headers=auth)
    assert r.status_code == 400 and "registry folder" in r.json()["detail"]
  assert client.delete("/v1/prompts/nope", headers=auth).status_code == 404


def test_register_and_delete_while_serving(client, server):
  auth = {"Authorization": f"Bearer {TOKEN}"}
  prompt_files.save_numpy_checkpoint(server[3] / "late_run", 42, np.load(PROMPTS / "first_word.npy"))
  entry = _post(client, "/v1/prompts", {"path": "late_run"}, headers=auth)
  assert entry["name"] == "late_run" and entry["path"].endswith("checkpoint_42/encoder.prompt.prompt.prompt")
  body = {"inputs": ROWS[:3], "candidates": WORDS[:8]}
  assert _post(client, "/v1/classify", {"prompt": "late_run", **body}) == \
      _post(client, "/v1/classify", {"prompt": "first_word", **body})
  assert _post(client, "/v1/prompts", {"path": "late_run"}, headers=auth)["row"] != entry["row"]  # replaced
  assert client.delete("/v1/prompts/late_run", headers=auth).status_code == 200
  assert client.post("/v1/classify", json={"prompt": "late_run", **body}).status_code == 404


def test_bounded_concurrent_load_loses_nothing(client, server):
  requests = _requests()
  expected = [_post(client, path, body) for path, body in requests]
  threads_n, per_thread = 8, 40
  outcomes = [[] for _ in range(threads_n)]

  def load(t):
    rng = random.Random(t)
    with httpx.Client(base_url=server[0], timeout=60) as c:
      for _ in range(per_thread):
        k = rng.randrange(len(requests))
        r = c.post(requests[k][0], json=requests[k][1])
        outcomes[t].append((k, r.status_code, r.json()))
  threads = [threading.Thread(target=load, args=(t,)) for t in range(threads_n)]
  for t in threads:
    t.start()
  for t in threads:
    t.join(240)
  done = [o for per in outcomes for o in per]
  assert len(done) == threads_n * per_thread
  assert all(code == 200 for _, code, _ in done), {code for _, code, _ in done}
  assert all(_same(expected[k], body) for k, _, body in done)
  metrics = client.get("/metrics").text
  assert _metric(metrics, 'ptj_prompt_rows_total{prompt="last_word"}') > 0
  assert _metric(metrics, 'ptj_requests_total{endpoint="/v1/generate",status="200"}') > 0
  for series in ("ptj_request_latency_seconds_bucket", "ptj_batch_rows_bucket", "ptj_queue_rows",
                 "ptj_batch_seconds_count", "ptj_prompts_registered"):
    assert series in metrics
  assert _metric(metrics, "ptj_queue_rows") == 0


def test_sigterm_finishes_in_flight_requests_and_exits_0(server):
  """Last in the module: SIGTERM once every request is accepted and rows are still queued;
  every request completes, the process exits 0."""
  url, proc, log, _ = server
  results, finished = [], []
  body = {"prompt": "last_word", "inputs": ROWS + ROWS[:4], "max_decode_length": 8}
  count, rows = 24, 16
  served = lambda text: _metric(text, 'ptj_prompt_rows_total{prompt="last_word"}')
  with httpx.Client(base_url=url, timeout=10) as c:
    start_rows = served(c.get("/metrics").text)

    def send():
      with httpx.Client(base_url=url, timeout=120) as own:
        r = own.post("/v1/generate", json=body)
        results.append(r.status_code)
        finished.append(time.time())
    threads = [threading.Thread(target=send) for _ in range(count)]
    for t in threads:
      t.start()
    deadline = time.time() + 60
    while time.time() < deadline:
      text = c.get("/metrics").text
      queued = _metric(text, "ptj_queue_rows")
      if served(text) - start_rows + queued >= count * rows:  # every request accepted
        break
      time.sleep(0.02)
  assert queued > 0, "all requests finished before SIGTERM could be sent; make the load larger"
  sent = time.time()
  proc.send_signal(signal.SIGTERM)
  for t in threads:
    t.join(120)
  assert proc.wait(120) == 0
  assert results == [200] * count
  assert sum(f > sent for f in finished) >= 1  # some were still in flight at SIGTERM
  assert "stopped: drained" in log.read_text()
  with pytest.raises(httpx.TransportError):
    httpx.get(f"{url}/healthz", timeout=2)
