def main(row):
    x = row['name']
    m = row.meta
    parts = [f"{k}={v}" for k, v in sorted(m.items())]
    return x.upper(), m.get('a'), m.inner.z, ', '.join(parts), 'a' in m, row.get('missing', 'dflt')
