"""Writes configs/data/readings.jsonl: sensor readings for the quickstart.

Deterministic (fixed seed), so the quickstart's output is the same on every
machine. Run from the repository root: python3 configs/data/make_readings.py
"""
import json
import random

rng = random.Random(7)
devices = ["dev-a", "dev-b", "dev-c", "dev-d"]
with open("configs/data/readings.jsonl", "w") as f:
    for i in range(400):
        dev = devices[i % len(devices)]
        base = {"dev-a": 21.0, "dev-b": 45.0, "dev-c": 70.0, "dev-d": 30.0}[dev]
        temp = round(base + rng.gauss(0, 8), 2)
        row = {"ts": 1_767_225_600_000 + i * 250, "device": dev, "temp_c": temp,
               "vibration": round(abs(rng.gauss(0.2, 0.1)), 3)}
        if i % 97 == 13:
            row["temp_c"] = None          # a sensor dropout: filtered out
        if i % 131 == 42:
            row["temp_c"] = "n/a"         # bad data: goes to the error output
        f.write(json.dumps(row) + "\n")
