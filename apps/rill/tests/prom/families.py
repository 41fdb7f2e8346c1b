"""Parses a Prometheus text exposition (stdin) with prometheus_client's
parser, which raises on malformed input; prints one line per family:
NAME TYPE SAMPLES."""
import sys

from prometheus_client.parser import text_string_to_metric_families

for fam in text_string_to_metric_families(sys.stdin.read()):
    print(fam.name, fam.type, len(fam.samples))
