def main(row):
    grid = [[0] * 3 for _ in range(2)]
    grid[1][2] = 5
    d = {}
    d.setdefault('k', []).append(1)
    d['k'] += [2]
    s = set()
    s.add(1); s.add(1); s.add(2)
    xs = list(row.xs)
    xs.sort(reverse=True)
    xs.insert(0, -1)
    popped = xs.pop()
    return grid, d, sorted(s), xs, popped
