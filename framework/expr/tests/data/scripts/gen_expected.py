import sys, glob
class Row:
    def __init__(self, d):
        for k, v in d.items():
            setattr(self, k, Row(v) if isinstance(v, dict) else v)
    def __getitem__(self, k): return getattr(self, k)
    def get(self, k, d=None): return getattr(self, k, d)
    def items(self): return [(k, v) for k, v in self.__dict__.items()]
    def __contains__(self, k): return k in self.__dict__
    def __repr__(self): return repr(self.__dict__)
ROW = {'xs': [5, 1, 4, 2, 8], 'f': 21.75, 'name': 'Ada Lovelace', 'text': 'the cat and the hat and THE bat',
       'meta': {'a': 1, 'b': 'two', 'inner': {'z': 26}}}
for path in sorted(glob.glob('s*.py')):
    src = open(path).read()
    g = {}
    exec(src, g)
    try:
        out = repr(g['main'](Row(ROW)))
    except Exception as e:
        out = '!ERR ' + type(e).__name__ + ': ' + str(e)
    print(path + '\t' + out)
