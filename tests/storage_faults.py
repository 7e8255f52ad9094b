"""A fault-injecting HTTP proxy in front of the Cloud Storage emulator, for retry tests.

It runs in its own process (as a flaky server would: its connections and threads are not
the client's) and forwards every request to the emulator unchanged, except those a fault
claims: a fault matches requests by method and a substring of the URL-decoded path and
query, and answers the first `times` of them itself with `status` (503 by default).
Clients (gcsfs, tensorstore, orbax) reach it through STORAGE_EMULATOR_HOST and
TENSORSTORE_GCS_HTTP_URL. Control requests go to `/__faults__` (POST a fault as JSON,
DELETE to clear faults and log) and `/__log__` (GET [method, target, status] rows).

  python tests/storage_faults.py UPSTREAM_URL   # prints the port it listens on
"""
from __future__ import annotations

import contextlib
import http.client
import http.server
import json
import subprocess
import sys
import threading
import urllib.parse
import urllib.request
from typing import Iterator

import gcs_emulator  # tests/gcs_emulator.py

_HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade",
               "content-length"}


class _State:
  def __init__(self, upstream: str):
    parsed = urllib.parse.urlparse(upstream)
    self.upstream = (parsed.hostname, parsed.port)
    self.faults: list[dict] = []
    self.log: list[tuple[str, str, int]] = []
    self.lock = threading.Lock()

  def claim(self, method: str, target: str) -> dict | None:
    with self.lock:
      for fault in self.faults:
        if (fault.get("method") in (None, method) and fault["match"] in target
            and fault["hits"] < fault["times"]):
          fault["hits"] += 1
          return fault
    return None


def _handler(state: _State):
  class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # quiet
      pass

    def _control(self, body: bytes) -> bool:
      if self.path.startswith("/__faults__"):
        with state.lock:
          if self.command == "POST":
            fault = json.loads(body)
            state.faults.append({"match": fault["match"], "times": int(fault["times"]),
                                 "method": fault.get("method"), "status": int(fault.get("status", 503)), "hits": 0})
          elif self.command == "DELETE":
            state.faults.clear()
            state.log.clear()
        self._answer(200, [("Content-Type", "application/json")], b"{}")
        return True
      if self.path.startswith("/__log__"):
        with state.lock:
          payload = json.dumps(state.log).encode()
        self._answer(200, [("Content-Type", "application/json")], payload)
        return True
      return False

    def _forward(self) -> None:
      length = int(self.headers.get("Content-Length") or 0)
      body = self.rfile.read(length) if length else b""
      if self._control(body):
        return
      target = urllib.parse.unquote(self.path)
      fault = state.claim(self.command, target)
      if fault is not None:
        payload = json.dumps({"error": {"code": fault["status"], "message": "injected fault"}}).encode()
        status, headers = fault["status"], [("Content-Type", "application/json")]
      else:
        conn = http.client.HTTPConnection(*state.upstream, timeout=60)
        try:
          headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
          conn.request(self.command, self.path, body=body if body or self.command in ("POST", "PUT") else None,
                       headers=headers)
          response = conn.getresponse()
          payload = response.read()
          status = response.status
          headers = [(k, v) for k, v in response.getheaders() if k.lower() not in _HOP_BY_HOP]
        finally:
          conn.close()
      with state.lock:
        state.log.append((self.command, target, status))
      self._answer(status, headers, payload)

    def _answer(self, status: int, headers: list[tuple[str, str]], payload: bytes) -> None:
      try:
        self.send_response(status)
        for k, v in headers:
          self.send_header(k, v)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
          self.wfile.write(payload)
      except (BrokenPipeError, ConnectionResetError):  # the client gave up on this answer
        self.close_connection = True

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _forward

  return Handler


class FaultyProxy:
  """The test's handle on a proxy process."""

  def __init__(self, url: str):
    self.url = url

  def _call(self, method: str, path: str, body: bytes | None = None) -> bytes:
    request = urllib.request.Request(self.url + path, data=body, method=method)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never an environment proxy
    with opener.open(request, timeout=30) as response:
      return response.read()

  def fail(self, match: str, times: int, *, method: str | None = None, status: int = 503) -> None:
    """Answer the next `times` requests whose target contains `match` with `status`."""
    self._call("POST", "/__faults__", json.dumps({"match": match, "times": times, "method": method,
                                                   "status": status}).encode())

  def clear(self) -> None:
    self._call("DELETE", "/__faults__")

  def statuses(self, match: str, method: str | None = None) -> list[int]:
    """The statuses answered so far to requests whose target contains `match`."""
    log = json.loads(self._call("GET", "/__log__"))
    return [s for m, t, s in log if match in t and method in (None, m)]


@contextlib.contextmanager
def running(upstream: str) -> Iterator[FaultyProxy]:
  """A proxy process in front of `upstream` (the emulator's URL); stopped on exit."""
  proc = subprocess.Popen([sys.executable, __file__, upstream], stdout=subprocess.PIPE, text=True)
  try:
    port = int(proc.stdout.readline())
    yield FaultyProxy(f"http://127.0.0.1:{port}")
  finally:
    gcs_emulator.stop(proc)


def main(upstream: str) -> None:
  server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(_State(upstream)))
  server.daemon_threads = True
  print(server.server_address[1], flush=True)
  server.serve_forever()


if __name__ == "__main__":
  main(sys.argv[1])
