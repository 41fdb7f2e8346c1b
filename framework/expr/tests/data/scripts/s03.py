def main(row):
    def make_adder(n):
        return lambda x: x + n
    adders = [make_adder(i) for i in range(3)]
    late = [lambda: i for i in range(3)]
    return [a(10) for a in adders], [f() for f in late]
