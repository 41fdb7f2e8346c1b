def main(row):
    total = 0
    def add(v):
        return total + v
    total = 5
    return add(1), row.xs[-1], row.xs[::-1][:2], (row.f // 1, row.f % 1 > 0)
