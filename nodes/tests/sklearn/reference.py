"""Data for the MLTransform reference test and what scikit-learn makes of it.

Usage: reference.py OUTDIR. Writes OUTDIR/input.jsonl (one row per record)
and OUTDIR/expected.json (scikit-learn's outputs on the same data).
"""
import json
import sys

import numpy as np
from sklearn.feature_extraction.text import CountVectorizer, TfidfTransformer
from sklearn.preprocessing import KBinsDiscretizer, MinMaxScaler, StandardScaler

out = sys.argv[1]
rng = np.random.default_rng(20261206)
n = 3000
a = rng.normal(50.0, 10.0, n)
b = rng.exponential(3.0, n)
words = [f"w{i}" for i in range(60)]
p = 1.0 / np.arange(1, 61)
p /= p.sum()
texts = [" ".join(rng.choice(words, size=rng.integers(3, 13), p=p)) for _ in range(n)]

with open(f"{out}/input.jsonl", "w") as f:
    for i in range(n):
        row = {"a1": a[i], "a2": a[i], "a3": a[i], "b": b[i], "text": texts[i]}
        f.write(json.dumps(row) + "\n")

col = a.reshape(-1, 1)
try:
    kb = KBinsDiscretizer(n_bins=5, encode="ordinal", strategy="quantile", quantile_method="linear")
except TypeError:  # scikit-learn before 1.7
    kb = KBinsDiscretizer(n_bins=5, encode="ordinal", strategy="quantile")
buckets = kb.fit_transform(b.reshape(-1, 1))[:, 0]

cv = CountVectorizer(tokenizer=str.split, lowercase=False, token_pattern=None)
counts = cv.fit_transform(texts)
tfidf = TfidfTransformer(norm=None, smooth_idf=True, sublinear_tf=False).fit_transform(counts)
vocab = cv.get_feature_names_out()
totals = np.asarray(counts.sum(axis=0)).ravel()

rows = []
for i in range(n):
    r = tfidf.getrow(i).tocoo()
    rows.append({str(vocab[j]): float(v) for j, v in zip(r.col, r.data)})

json.dump(
    {
        "zscore": StandardScaler().fit_transform(col)[:, 0].tolist(),
        "minmax01": MinMaxScaler().fit_transform(col)[:, 0].tolist(),
        "minmax_pm1": MinMaxScaler(feature_range=(-1, 1)).fit_transform(col)[:, 0].tolist(),
        "buckets": buckets.astype(int).tolist(),
        "bin_edges": kb.bin_edges_[0].tolist(),
        "token_counts": {str(t): int(c) for t, c in zip(vocab, totals)},
        "tfidf_raw": rows,
    },
    open(f"{out}/expected.json", "w"),
)
