"""Queries a served rill stage with Triton's own HTTP client, as a Triton
user would: health, model metadata, then one inference over the rows given
on stdin (JSON lines with temp, vibration, current, pressure), with binary
inputs (tritonclient's default). Prints one JSON line per row: label,
score and probabilities as the client decoded them, and the model version.

usage: triton.py HOST:PORT MODEL [timeout_us]
"""
import json
import sys

import numpy as np
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

url, model = sys.argv[1], sys.argv[2]
rows = [json.loads(l) for l in sys.stdin if l.strip()]
client = httpclient.InferenceServerClient(url=url)
assert client.is_server_live(), "not live"
assert client.is_server_ready(), "not ready"
assert client.is_model_ready(model), "model not ready"
meta = client.get_model_metadata(model)
names = [i["name"] for i in meta["inputs"]]
inputs = []
for name in names:
    # float64: the stream reads the JSON numbers as doubles too
    data = np.array([r[name] for r in rows], dtype=np.float64)
    t = httpclient.InferInput(name, list(data.shape), "FP64")
    t.set_data_from_numpy(data)  # binary_data=True, the client's default
    inputs.append(t)
outputs = [httpclient.InferRequestedOutput(n) for n in ("label", "score", "probabilities")]
try:
    result = client.infer(model, inputs, outputs=outputs, request_id="triton-1")
except InferenceServerException as e:
    print(json.dumps({"error": e.message()}))
    sys.exit(3)
resp = result.get_response()
labels = result.as_numpy("label")
scores = result.as_numpy("score")
probs = result.as_numpy("probabilities")
for i in range(len(rows)):
    label = labels[i]
    if isinstance(label, bytes):
        label = label.decode()
    print(json.dumps({
        "label": str(label),
        "score": float(scores[i]),
        "probabilities": [float(p) for p in probs[i]],
        "model_version": resp["model_version"],
        "id": resp.get("id"),
    }))
# a bad request is an exception naming the problem, not a hang
bad = httpclient.InferInput("nope", [1], "FP64")
bad.set_data_from_numpy(np.array([1.0]))
try:
    client.infer(model, [bad])
    print(json.dumps({"error": "a bad input was accepted"}))
    sys.exit(4)
except InferenceServerException as e:
    print(json.dumps({"bad_request": e.message()}))
