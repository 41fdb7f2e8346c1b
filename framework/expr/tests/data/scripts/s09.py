def main(row):
    acc = []
    n = 0
    for i in range(5):
        for j in range(5):
            if j > i:
                break
            n += 1
        acc.append(n)
    total = sum(v for v in acc if v % 2)
    return acc, total, any(v > 10 for v in acc), all(v > 0 for v in acc)
