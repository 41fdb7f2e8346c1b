def main(row):
    if (n := len(row.xs)) > 3:
        msg = f"{n} items, first={row.xs[0]!r}, mean={sum(row.xs)/n:.2f}"
    else:
        msg = "few"
    return msg, f"{row.name=}", f"{row.f:>10.3f}|"
