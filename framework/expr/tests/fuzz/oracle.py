"""The oracle of rill-expr's differential fuzzer (`tests/fuzz.rs`): runs each
program with CPython and prints what it gave, one JSON line per job.

Input, one JSON object per line: {"kind": "expr" | "lambda" | "script",
"src": program, "rows": [python literal of a record, ...]}. Output, one line
per job: {"out": [{"ok": repr} | {"err": "TypeError"}, ...]}, one entry per
row, in order.

A record is what rill's evaluator sees: in the expression form its fields are
variables; in a callable, the row has attribute and item access. A map inside
a record is a read-only row as well (as Beam's nested rows are immutable).
"""

import builtins
import json
import math
import re
import signal
import sys
import warnings


class Timeout(Exception):
    pass


def alarm(signum, frame):
    raise Timeout()


class Row(dict):
    """A dict with attribute access that cannot be changed."""

    __slots__ = ()

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def _refuse(self, *args, **kwargs):
        raise TypeError("'Row' object does not support item assignment")

    __setitem__ = __delitem__ = _refuse
    pop = popitem = setdefault = update = clear = _refuse


def as_row(v):
    if isinstance(v, dict):
        return Row({k: as_row(x) for k, x in v.items()})
    if isinstance(v, list):
        return [as_row(x) for x in v]
    return v


LITERALS = {"nan": math.nan, "inf": math.inf, "__builtins__": {}}


def kind(e):
    t = type(e)
    if t.__module__ in ("builtins", "exceptions"):
        return t.__name__
    return f"{t.__module__}.{t.__name__}"


def run(job):
    src = job["src"]
    out = []
    try:
        if job["kind"] == "expr":
            code = compile(src, "<expr>", "eval")
        else:
            code = compile(src, "<callable>", "exec")
    except SyntaxError as e:
        return [{"err": "SyntaxError", "msg": str(e)}] * len(job["rows"])
    except Exception as e:  # a constant that fails to compile
        return [{"err": kind(e), "msg": str(e)}] * len(job["rows"])
    for text in job["rows"]:
        fields = as_row(eval(text, dict(LITERALS)))
        signal.setitimer(signal.ITIMER_REAL, 2.0)
        try:
            if job["kind"] == "expr":
                env = {"__builtins__": builtins, "math": math, "re": re}
                env.update(fields)
                v = eval(code, env)
            else:
                env = {"__builtins__": builtins}
                exec(code, env)
                if job["kind"] == "lambda":
                    f = env["f"]
                else:
                    f = env[job.get("entry", "f")]
                v = f(fields)
            out.append({"ok": repr(v)})
        except Timeout:
            out.append({"err": "Timeout"})
        except RecursionError as e:
            out.append({"err": "RecursionError", "msg": str(e)[:200]})
        except Exception as e:
            out.append({"err": kind(e), "msg": str(e)[:200]})
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
    return out


def main():
    warnings.simplefilter("ignore")
    sys.setrecursionlimit(200)
    signal.signal(signal.SIGALRM, alarm)
    for line in sys.stdin:
        job = json.loads(line)
        print(json.dumps({"out": run(job)}), flush=True)


if __name__ == "__main__":
    main()
