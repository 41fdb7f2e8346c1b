def fact(n):
    return 1 if n <= 1 else n * fact(n - 1)
def main(row):
    a, *rest = row.xs
    (b, c), d = (1, 2), 3
    first, second = row.name.split(' ', 1)
    return fact(10), a, rest, b + c + d, second
