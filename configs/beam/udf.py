# Functions for configs/beam/map_to_fields_from_file.yaml, loaded the way
# Beam YAML loads a file-based callable: `{path: ..., name: ...}`.
import re

UNITS = {"g": 1, "kg": 1000}


def grams(text):
    m = re.match(r"(\d+)\s*(kg|g)$", text.strip())
    return int(m.group(1)) * UNITS[m.group(2)] if m else None


def weight_in_grams(row):
    return grams(row.weight)


def is_heavy(row):
    return (grams(row.weight) or 0) >= 1000
