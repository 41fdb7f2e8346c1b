import math
SCALE = 2
def helper(v, k=SCALE):
    return v * k
def main(row):
    out = []
    for x in row.xs:
        if x > 3:
            break
        out.append(helper(x))
    return out, math.floor(row.f)
