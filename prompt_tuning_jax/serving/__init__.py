"""Serving many prompts from one frozen model over HTTP (`python -m prompt_tuning_jax.serve`).

registry: the named prompts and the device prompt bank [capacity, P, d] they occupy rows of;
engine: the jitted forwards (score, classify, generate) over bucketed shapes, warmed at start;
scheduler: one worker thread that batches rows of any prompt together (dynamic batching);
metrics: the Prometheus series; app: the FastAPI routes; server: flags -> a running server.
"""
