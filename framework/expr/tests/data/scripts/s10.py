from math import sqrt, pi as PI
def main(row):
    def dist(p, q):
        return sqrt((p[0] - q[0]) ** 2 + (p[1] - q[1]) ** 2)
    pts = [(0, 0), (3, 4), (6, 8)]
    return [round(dist(pts[0], p), 3) for p in pts], round(PI, 4)
