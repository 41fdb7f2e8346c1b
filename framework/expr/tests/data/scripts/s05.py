import re
WORD = re.compile(r"[A-Za-z]+")
def main(row):
    counts = {}
    for w in WORD.findall(row.text.lower()):
        counts[w] = counts.get(w, 0) + 1
    best = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:3]
    return best, len(counts), dict(sorted(counts.items()))
