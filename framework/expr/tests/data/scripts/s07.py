def classify(t):
    if t < 0:
        return 'freezing'
    elif t < 15:
        return 'cold'
    elif t < 25:
        return 'mild'
    else:
        return 'hot'
def main(row):
    return [classify(t) for t in row.xs] + [classify(row.f)]
