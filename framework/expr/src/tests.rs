use rill_core::{Record, Tensor, TensorData, Value, record};

use crate::{Limits, Program, truthy};

fn ev(src: &str, r: &Record) -> Value {
    Program::expression(src)
        .unwrap_or_else(|e| panic!("compile {src:?}: {e}"))
        .eval(r)
        .unwrap_or_else(|e| panic!("eval {src:?}: {e}"))
}

/// Evaluates an expression over an empty record.
fn e(src: &str) -> Value {
    ev(src, &Record::default())
}

fn e_err(src: &str) -> String {
    match Program::expression(src)
        .unwrap_or_else(|e| panic!("compile {src:?}: {e}"))
        .eval(&Record::default())
    {
        Ok(v) => panic!("{src:?} should fail, gave {v:?}"),
        Err(e) => e.msg,
    }
}

fn call(src: &str, r: &Record) -> Value {
    Program::callable(src)
        .unwrap_or_else(|e| panic!("compile {src:?}: {e}"))
        .eval(r)
        .unwrap_or_else(|e| panic!("eval {src:?}: {e}"))
}

fn s(x: &str) -> Value {
    Value::from(x)
}

fn list(items: Vec<Value>) -> Value {
    Value::List(items)
}

// ---- the Beam examples ------------------------------------------------------

fn plant(icon: &str, name: &str, duration: &str) -> Record {
    record! {"icon" => icon, "name" => name, "duration" => duration}
}

#[test]
fn beam_lambda_filter() {
    let p = Program::callable("lambda plant: plant.duration == 'perennial'").unwrap();
    assert_eq!(
        p.eval(&plant("🍓", "Strawberry", "perennial")).unwrap(),
        Value::Bool(true)
    );
    assert_eq!(
        p.eval(&plant("🥕", "Carrot", "biennial")).unwrap(),
        Value::Bool(false)
    );
    assert_eq!(p.fields_read(), vec!["duration".to_string()]);
}

#[test]
fn beam_lambda_strip() {
    // The YAML "lambda row: row.element.strip('# \\n')" gives Python source
    // with a backslash-n escape inside the string literal.
    let src = "lambda row: row.element.strip('# \\n')";
    let r = record! {"element" => "# 🍓Strawberry\n"};
    assert_eq!(call(src, &r), s("🍓Strawberry"));
}

#[test]
fn beam_expression_strip() {
    let src = "element.strip('# \\n')";
    let r = record! {"element" => "# 🥕Carrot\n"};
    assert_eq!(ev(src, &r), s("🥕Carrot"));
    assert_eq!(
        Program::expression(src).unwrap().fields_read(),
        vec!["element".to_string()]
    );
}

const REGEX_FILTER: &str = r#"import re
def regex_filter(row):
  match = re.match("(?P<icon>[^\s,]+), *(\w+), *(\w+)", row.plant)
  return match.group(0) if match else match
"#;

#[test]
fn beam_regex_script() {
    let p = Program::callable(REGEX_FILTER).unwrap();
    let run = |x: &str| p.eval(&record! {"plant" => x}).unwrap();
    assert_eq!(
        run("🍓, Strawberry, perennial"),
        s("🍓, Strawberry, perennial")
    );
    assert_eq!(
        run("🥕, Carrot, biennial, extra"),
        s("🥕, Carrot, biennial")
    );
    assert_eq!(run("# 🍌, invalid, format"), Value::Null);
    assert_eq!(run("invalid, 🍉, format"), Value::Null);
    assert_eq!(p.fields_read(), vec!["plant".to_string()]);
}

#[test]
fn beam_bare_field_keep() {
    let p = Program::expression("plant").unwrap();
    assert!(truthy(&p.eval(&record! {"plant" => "🍓"}).unwrap()));
    assert!(!truthy(&p.eval(&record! {"plant" => ""}).unwrap()));
    assert!(!truthy(&p.eval(&record! {"plant" => Value::Null}).unwrap()));
    // A field named like a keyword still reads the field.
    assert_eq!(ev("from", &record! {"from" => 3}), Value::Int(3));
}

#[test]
fn missing_field_is_a_per_record_error() {
    let p = Program::expression("temp > 20").unwrap();
    let err = p.eval(&record! {"a" => 1, "b" => 2}).unwrap_err();
    assert_eq!(
        err.msg,
        "NameError: name 'temp' is not defined: the record has no field `temp` (it has: a, b)"
    );
    assert_eq!(p.eval(&record! {"temp" => 25}).unwrap(), Value::Bool(true));
}

#[test]
fn smoke() {
    assert_eq!(e("1 + 2 * 3"), Value::Int(7));
    assert_eq!(e("7 / 2"), Value::Float(3.5));
    assert_eq!(e("-7 // 2"), Value::Int(-4));
    assert_eq!(e("-7 % 3"), Value::Int(2));
    assert_eq!(e("'a' + 'b'"), s("ab"));
    assert_eq!(
        e("[x * x for x in range(4)]"),
        list(vec![0.into(), 1.into(), 4.into(), 9.into()])
    );
    assert!(e_err("1 + 'a'").contains("unsupported operand type(s) for +: 'int' and 'str'"));
    let _ = Limits::default();
    let t = Tensor::new(vec![2, 3], TensorData::F32(vec![0.0; 6])).unwrap();
    assert_eq!(ev("len(t)", &record! {"t" => t.clone()}), Value::Int(2));
    assert_eq!(
        ev("t.shape", &record! {"t" => t}),
        list(vec![2.into(), 3.into()])
    );
}

// ---- semantics ---------------------------------------------------------------

#[test]
fn floor_division_and_modulo_of_negatives() {
    assert_eq!(e("-7 // 2"), Value::Int(-4));
    assert_eq!(e("7 // -2"), Value::Int(-4));
    assert_eq!(e("-7 % 2"), Value::Int(1));
    assert_eq!(e("7 % -2"), Value::Int(-1));
    assert_eq!(e("-7.5 // 2"), Value::Float(-4.0));
    assert_eq!(e("-7.5 % 2"), Value::Float(0.5));
    assert_eq!(e("-9223372036854775808 % -1"), Value::Int(0));
    assert_eq!(e("7 / 7"), Value::Float(1.0));
}

#[test]
fn chained_comparisons_short_circuit() {
    assert_eq!(e("1 < 2 < 3"), Value::Bool(true));
    assert_eq!(e("1 < 3 < 2"), Value::Bool(false));
    // The right side is not evaluated once a link is false.
    assert_eq!(e("1 > 2 < 1 // 0"), Value::Bool(false));
    assert_eq!(ev("0 <= x < 10", &record! {"x" => 5}), Value::Bool(true));
}

#[test]
fn and_or_return_operands() {
    assert_eq!(e("0 or 'x'"), s("x"));
    assert_eq!(e("'' or []"), list(vec![]));
    assert_eq!(e("1 and 'y'"), s("y"));
    assert_eq!(e("None and 1 // 0"), Value::Null);
    assert_eq!(e("'a' or 1 // 0"), s("a"));
}

#[test]
fn string_slicing_and_unicode() {
    assert_eq!(e("'abcdef'[1:4]"), s("bcd"));
    assert_eq!(e("'abcdef'[::-1]"), s("fedcba"));
    assert_eq!(e("'abcdef'[-2:]"), s("ef"));
    assert_eq!(e("'h🍓llo'[1]"), s("🍓"));
    assert_eq!(e("'h🍓llo'[1:3]"), s("🍓l"));
    assert_eq!(e("len('h🍓llo')"), Value::Int(5));
    assert_eq!(e("[1, 2, 3, 4][::-2]"), list(vec![4.into(), 2.into()]));
}

#[test]
fn fstrings() {
    let r = record! {"x" => 12.34567, "name" => "rill", "n" => 1234567};
    assert_eq!(ev("f'{x:.2f}'", &r), s("12.35"));
    assert_eq!(
        ev("f'{name!r} has {len(name)} letters'", &r),
        s("'rill' has 4 letters")
    );
    assert_eq!(
        ev("f'{n:,}|{n:>10}|{name:^8}|'", &r),
        s("1,234,567|   1234567|  rill  |")
    );
    assert_eq!(ev("f'{x=:.1f}'", &r), s("x=12.3"));
    assert_eq!(ev("f'{{literal}} {name}'", &r), s("{literal} rill"));
    let w = record! {"v" => 2.5, "w" => 8};
    assert_eq!(ev("f'{v:{w}.2f}'", &w), s("    2.50"));
}

#[test]
fn float_str_matches_python() {
    assert_eq!(e("str(1.0)"), s("1.0"));
    assert_eq!(e("str(0.1)"), s("0.1"));
    assert_eq!(e("str(1e20)"), s("1e+20"));
    assert_eq!(e("str(1e16)"), s("1e+16"));
    assert_eq!(e("str(1e15)"), s("1000000000000000.0"));
    assert_eq!(e("str(0.0001)"), s("0.0001"));
    assert_eq!(e("str(0.00001)"), s("1e-05"));
    assert_eq!(e("str(-0.0)"), s("-0.0"));
    assert_eq!(e("str(42)"), s("42"));
    assert_eq!(e("str(0.1 + 0.2)"), s("0.30000000000000004"));
}

#[test]
fn comprehensions_and_generators() {
    assert_eq!(
        e("[x * x for x in range(5) if x % 2]"),
        list(vec![1.into(), 9.into()])
    );
    assert_eq!(e("sum(x for x in range(101))"), Value::Int(5050));
    assert_eq!(e("{k: v for k, v in [('a', 1), ('b', 2)]}"), {
        let mut m = rill_core::Fields::default();
        m.insert("a".into(), 1.into());
        m.insert("b".into(), 2.into());
        Value::Map(m)
    });
    assert_eq!(
        e("sorted({c for c in 'banana'})"),
        list(vec![s("a"), s("b"), s("n")])
    );
    assert_eq!(
        e("[(i, j) for i in range(3) for j in range(i)]").to_string(),
        "[[1,0],[2,0],[2,1]]"
    );
    // Comprehension variables do not leak, and `any` stops at the first hit.
    assert_eq!(e("any(x > 2 for x in range(10**12))"), Value::Bool(true));
    assert_eq!(e("all(x < 2 for x in range(10**12))"), Value::Bool(false));
    let p = Program::callable(
        "def f(row):\n    x = 'outer'\n    ys = [x for x in range(3)]\n    return x\n",
    )
    .unwrap();
    assert_eq!(p.eval(&Record::default()).unwrap(), s("outer"));
}

#[test]
fn records_and_rows() {
    let mut inner = rill_core::Fields::default();
    inner.insert("lat".into(), 1.5.into());
    let r = record! {"pos" => Value::Map(inner), "tags" => list(vec![s("a"), s("b")])};
    assert_eq!(ev("pos.lat", &r), Value::Float(1.5));
    assert_eq!(ev("pos['lat']", &r), Value::Float(1.5));
    assert_eq!(ev("'b' in tags", &r), Value::Bool(true));
    assert_eq!(
        call("lambda row: row['pos'].lat * 2", &r),
        Value::Float(3.0)
    );
    assert_eq!(call("lambda row: row.pos", &r), r.fields["pos"].clone());
    assert_eq!(
        call("lambda row: {**row.pos, 'lon': 2}", &r).to_string(),
        r#"{"lat":1.5,"lon":2}"#
    );
    let err = Program::callable("lambda row: row.nope")
        .unwrap()
        .eval(&r)
        .unwrap_err();
    assert!(
        err.msg.contains("no field `nope`") && err.msg.contains("(it has: pos, tags)"),
        "{err}"
    );
    // Fields shadow builtins; builtins still work when no field has the name.
    assert_eq!(ev("len + 1", &record! {"len" => 4}), Value::Int(5));
    assert_eq!(ev("len(tags)", &r), Value::Int(2));
    // A list read from the record is one object for the whole evaluation,
    // as in Python: a change made through one read is seen by the next.
    let mut with_c = match &r.fields["tags"] {
        Value::List(l) => l.clone(),
        _ => unreachable!(),
    };
    with_c.push(Value::from("c"));
    assert_eq!(
        call("lambda row: (row.tags.append('c'), row.tags)[1]", &r),
        Value::List(with_c.clone())
    );
    assert_eq!(
        call(
            "lambda row: (row['tags'].append('c'), row.get('tags'))[1]",
            &r
        ),
        Value::List(with_c.clone())
    );
    assert_eq!(ev("(tags.append('c'), tags)[1]", &r), Value::List(with_c));
    // the record itself is untouched: the next evaluation starts afresh
    assert_eq!(ev("len(tags)", &r), Value::Int(2));
}

#[test]
fn results_must_be_storable() {
    for src in [
        "len",
        "re",
        "lambda x: x",
        "re.compile('a')",
        "re.match('a', 'a')",
    ] {
        let err = Program::expression(src)
            .unwrap()
            .eval(&Record::default())
            .unwrap_err();
        assert!(
            err.msg.starts_with("TypeError: cannot store a "),
            "{src}: {err}"
        );
    }
    assert!(e_err("{1: 2}").contains("map keys must be str"));
    assert_eq!(e("(1, 'a')"), list(vec![1.into(), s("a")]));
    assert_eq!(e("b'ab'"), Value::Bytes(b"ab".to_vec()));
    assert_eq!(e("{'a': None}").to_string(), r#"{"a":null}"#);
}

#[test]
fn truthiness() {
    assert!(!truthy(&Value::Null));
    assert!(!truthy(&Value::Int(0)));
    assert!(truthy(&Value::Float(f64::NAN)));
    assert!(!truthy(&s("")));
    assert!(!truthy(&list(vec![])));
    assert!(truthy(&list(vec![Value::Null])));
    assert!(!truthy(&Value::Map(Default::default())));
    let t = Tensor::new(vec![0], TensorData::F32(vec![])).unwrap();
    assert!(!truthy(&Value::Tensor(Box::new(t))));
}

#[test]
fn regex_module() {
    assert_eq!(
        e(r"re.sub(r'(\w+)@(\w+)', r'\2 at \1', 'me@home')"),
        s("home at me")
    );
    assert_eq!(
        e(r"re.findall(r'\d+', 'a1b22')"),
        list(vec![s("1"), s("22")])
    );
    assert_eq!(
        e(r"re.split(r'[,;] *', 'a, b;c')"),
        list(vec![s("a"), s("b"), s("c")])
    );
    assert_eq!(
        e(r"re.fullmatch(r'\d+', '123') is not None"),
        Value::Bool(true)
    );
    assert_eq!(e(r"re.match(r'\d+', 'x123')"), Value::Null);
    assert_eq!(
        e(r"re.search(r'(?P<n>\d+)', 'x123').groupdict()").to_string(),
        r#"{"n":"123"}"#
    );
    assert_eq!(
        e(r"re.search(r'\d', 'é1').span()"),
        list(vec![1.into(), 2.into()])
    );
    assert_eq!(
        e(r"bool(re.compile('AB', re.IGNORECASE).match('ab'))"),
        Value::Bool(true)
    );
    // Patterns computed at run time work too, and match objects are truthy.
    let r = record! {"pat" => r"^\w+$", "x" => "héllo"};
    assert_eq!(ev("bool(re.match(pat, x))", &r), Value::Bool(true));
    // Unsupported constructs are reported with the position of the pattern.
    let err = Program::expression(r"re.match(r'(a)\1', x)").unwrap_err();
    assert!(err.msg.contains("backreferences"), "{err}");
    assert_eq!((err.line, err.col), (1, 10));
    let err = Program::expression("re.search('a(?=b)', x)").unwrap_err();
    assert!(err.msg.contains("lookahead"), "{err}");
}

#[test]
fn math_module() {
    assert_eq!(e("math.sqrt(16)"), Value::Float(4.0));
    assert_eq!(e("math.floor(-2.5)"), Value::Int(-3));
    assert_eq!(e("math.ceil(2.1)"), Value::Int(3));
    assert_eq!(e("round(math.pi, 2) == 3.14"), Value::Bool(true));
    assert_eq!(e("math.isnan(math.nan)"), Value::Bool(true));
    assert_eq!(e("math.hypot(3, 4)"), Value::Float(5.0));
    assert!(e_err("math.sqrt(-1)").starts_with("ValueError: math domain error"));
    let p = Program::callable("import math\ndef f(row):\n    return math.log10(row.x)\n").unwrap();
    assert_eq!(p.eval(&record! {"x" => 1000}).unwrap(), Value::Float(3.0));
}

#[test]
fn callables_with_helpers_and_constants() {
    let src = "import re\nimport math\nLIMIT = 10\nPAT = re.compile(r'^(\\w+)-(\\d+)$')\n\ndef scale(v):\n    return min(v, LIMIT) * 2\n\ndef parse(row):\n    m = PAT.match(row.id)\n    if not m:\n        return None\n    name, num = m.groups()\n    return {'name': name, 'n': scale(int(num)), 'root': math.sqrt(int(num))}\n";
    let p = Program::callable(src).unwrap();
    assert_eq!(
        p.eval(&record! {"id" => "ab-16"}).unwrap().to_string(),
        r#"{"name":"ab","n":20,"root":4.0}"#
    );
    assert_eq!(p.eval(&record! {"id" => "nope"}).unwrap(), Value::Null);
    assert_eq!(p.fields_read(), vec!["id".to_string()]);
    // An indented script (as YAML block scalars may give) is dedented.
    let p = Program::callable("    def f(r):\n        return r.a + 1\n").unwrap();
    assert_eq!(p.eval(&record! {"a" => 1}).unwrap(), Value::Int(2));
}

#[test]
fn raise_and_assert() {
    let p = Program::callable("def f(row):\n    if row.x < 0:\n        raise ValueError(f'negative: {row.x}')\n    assert row.x != 5, 'five'\n    return row.x\n").unwrap();
    assert_eq!(p.eval(&record! {"x" => 1}).unwrap(), Value::Int(1));
    assert_eq!(
        p.eval(&record! {"x" => -1}).unwrap_err().msg,
        "ValueError: negative: -1"
    );
    assert_eq!(
        p.eval(&record! {"x" => 5}).unwrap_err().msg,
        "AssertionError: five"
    );
}

#[test]
fn integer_overflow_is_an_error() {
    for src in [
        "9223372036854775807 + 1",
        "2 ** 64",
        "-(-9223372036854775807 - 1)",
        "3 * 10 ** 18 * 4",
        "1 << 63",
        "abs(-9223372036854775807 - 1)",
    ] {
        assert!(e_err(src).starts_with("OverflowError"), "{src}");
    }
    assert_eq!(e("-9223372036854775808"), Value::Int(i64::MIN));
    assert!(
        Program::expression("99999999999999999999")
            .unwrap_err()
            .msg
            .contains("too large")
    );
    assert!(e_err("1 / 0").starts_with("ZeroDivisionError"));
    assert!(e_err("1 % 0").starts_with("ZeroDivisionError"));
    assert!(e_err("1.5 // 0").starts_with("ZeroDivisionError"));
}

// ---- bounds ------------------------------------------------------------------

#[test]
fn step_budget() {
    let err = e_err("sum(range(10**9))");
    assert!(
        err.starts_with("RuntimeError: step budget exhausted"),
        "{err}"
    );
    let err = e_err("len([[i * j for i in range(10000)] for j in range(10000)])");
    assert!(err.contains("step budget exhausted"), "{err}");
    let fib = "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\ndef f(row):\n    return fib(row.n)\n";
    let p = Program::callable(fib).unwrap();
    assert_eq!(p.eval(&record! {"n" => 15}).unwrap(), Value::Int(610));
    assert!(
        p.eval(&record! {"n" => 40})
            .unwrap_err()
            .msg
            .contains("step budget")
    );
    // A smaller budget is honoured, and every evaluation starts afresh.
    let p = Program::expression("sum(range(n))")
        .unwrap()
        .with_limits(Limits {
            max_steps: 100,
            ..Limits::default()
        });
    assert_eq!(p.eval(&record! {"n" => 50}).unwrap(), Value::Int(1225));
    assert!(p.eval(&record! {"n" => 500}).is_err());
    assert_eq!(p.eval(&record! {"n" => 50}).unwrap(), Value::Int(1225));
}

#[test]
fn size_caps() {
    let err = e_err("'a' * 10**9");
    assert!(
        err.starts_with("MemoryError:") && err.contains("exceeds"),
        "{err}"
    );
    assert!(e_err("list(range(10**9))").starts_with("MemoryError:"));
    assert!(e_err("[0] * 10**8").starts_with("MemoryError:"));
    assert!(e_err("f'{1:100000000}'").starts_with("MemoryError:"));
    assert!(e_err("'x'.zfill(10**9)").starts_with("MemoryError:"));
    let p = Program::callable("def f(row):\n    s = 'ab'\n    for i in range(40):\n        s = s + s\n    return len(s)\n").unwrap();
    assert!(
        p.eval(&Record::default())
            .unwrap_err()
            .msg
            .starts_with("MemoryError:")
    );
    // range() itself is lazy, so large ranges are fine to test membership.
    assert_eq!(e("10**15 in range(0, 10**18, 5)"), Value::Bool(true));
    assert_eq!(
        e("len(range(10**18))"),
        Value::Int(1_000_000_000_000_000_000)
    );
}

#[test]
fn recursion_is_capped() {
    let p = Program::callable("def down(n):\n    return 0 if n == 0 else 1 + down(n - 1)\ndef f(row):\n    return down(row.n)\n").unwrap();
    assert_eq!(p.eval(&record! {"n" => 50}).unwrap(), Value::Int(50));
    let err = p.eval(&record! {"n" => 100000}).unwrap_err();
    assert!(err.msg.starts_with("RecursionError"), "{err}");
}

#[test]
fn deep_values_do_not_overflow_the_stack() {
    // Builds a list nested 200,000 deep; dropping it must not recurse.
    let p = Program::callable("def f(row):\n    x = []\n    for i in range(200000):\n        x = [x]\n    return len(x)\n").unwrap();
    assert_eq!(p.eval(&Record::default()).unwrap(), Value::Int(1));
    let p = Program::callable(
        "def f(row):\n    x = []\n    for i in range(1000):\n        x = [x]\n    return x\n",
    )
    .unwrap();
    assert!(
        p.eval(&Record::default())
            .unwrap_err()
            .msg
            .starts_with("RecursionError")
    );
    let p = Program::callable(
        "def f(row):\n    x = []\n    x.append(x)\n    return repr(x) + str(x == x)\n",
    )
    .unwrap();
    assert!(p.eval(&Record::default()).is_err());
}

#[test]
fn deep_source_is_a_compile_error_not_a_crash() {
    let deep = format!("{}1{}", "(".repeat(5000), ")".repeat(5000));
    assert!(
        Program::expression(&deep)
            .unwrap_err()
            .msg
            .contains("nested")
    );
    let neg = format!("{}1", "-".repeat(20000));
    assert!(
        Program::expression(&neg)
            .unwrap_err()
            .msg
            .contains("nested")
    );
    let nots = format!("{}x", "not ".repeat(5000));
    assert!(
        Program::expression(&nots)
            .unwrap_err()
            .msg
            .contains("nested")
    );
    // Long flat chains are fine.
    let sum = vec!["1"; 5000].join(" + ");
    assert_eq!(e(&sum), Value::Int(5000));
    let cat = vec!["'a'"; 3000].join(" + ");
    assert_eq!(
        ev(&format!("len({cat})"), &Record::default()),
        Value::Int(3000)
    );
}

// ---- the sandbox ------------------------------------------------------------

fn compile_err(src: &str) -> crate::CompileError {
    match Program::callable(src) {
        Ok(_) => panic!("{src:?} should not compile"),
        Err(e) => e,
    }
}

#[test]
fn disallowed_constructs_have_positions() {
    let cases: &[(&str, &str, (usize, usize))] = &[
        (
            "def f(row):\n    while True:\n        pass\n",
            "while loops are not allowed",
            (2, 5),
        ),
        (
            "import os\ndef f(row):\n    return 1\n",
            "import of module 'os' is not allowed; allowed modules: math, re",
            (1, 8),
        ),
        (
            "from subprocess import run\ndef f(row):\n    return 1\n",
            "module 'subprocess' is not allowed",
            (1, 6),
        ),
        (
            "class A:\n    pass\ndef f(row):\n    return 1\n",
            "class definitions are not allowed",
            (1, 1),
        ),
        (
            "X = 1\ndef f(row):\n    global X\n    return X\n",
            "`global` statements are not allowed",
            (3, 5),
        ),
        (
            "def f(row):\n    try:\n        return 1\n    except Exception:\n        return 2\n",
            "try/except is not allowed",
            (2, 5),
        ),
        (
            "def f(row):\n    with open('x') as h:\n        return 1\n",
            "`with` statements are not allowed",
            (2, 5),
        ),
        (
            "def f(row):\n    yield 1\n",
            "`yield` is not supported",
            (2, 5),
        ),
        (
            "async def f(row):\n    return 1\n",
            "`async def` is not supported",
            (1, 1),
        ),
        (
            "def f(row):\n    return open('/etc/passwd').read()\n",
            "`open` is not allowed",
            (2, 12),
        ),
        (
            "def f(row):\n    return exec('1')\n",
            "`exec` is not allowed",
            (2, 12),
        ),
        ("lambda row: eval(row.x)", "`eval` is not allowed", (1, 13)),
        (
            "lambda row: __import__('os')",
            "`__import__` is not allowed",
            (1, 13),
        ),
        ("lambda row: __builtins__", "double underscores", (1, 13)),
        (
            "lambda row: row.__class__",
            "dunder attribute `__class__`",
            (1, 17),
        ),
        (
            "lambda row: ().__class__.__bases__",
            "dunder attribute `__bases__`",
            (1, 26),
        ),
        (
            "lambda *args: 1",
            "`*args` parameters are not supported",
            (1, 8),
        ),
        (
            "lambda row: undefined_name + 1",
            "name 'undefined_name' is not defined",
            (1, 13),
        ),
        (
            "lambda row: re.match('a', row.x)",
            "add `import re`",
            (1, 13),
        ),
        (
            "x = 1\n",
            "a callable must be a `lambda` expression",
            (1, 1),
        ),
        (
            "def f(row):\n    return row.x +\n",
            "SyntaxError: Expected an expression",
            (2, 19),
        ),
        (
            "def f(row):\n    del row\n",
            "`del` is not supported",
            (2, 5),
        ),
        (
            "def f(row):\n    return 1j\n",
            "complex numbers are not supported",
            (2, 12),
        ),
        ("def f(row):\n    break\n", "'break' outside loop", (2, 5)),
    ];
    let mut bad = Vec::new();
    for (src, msg, pos) in cases {
        let err = compile_err(src);
        if !err.msg.contains(msg) || (err.line, err.col) != *pos {
            bad.push(format!("{src:?}: got {err}, want {pos:?} {msg}"));
        }
        assert!(
            err.to_string()
                .starts_with(&format!("line {}, column {}: ", err.line, err.col))
        );
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
    // In an expression, disallowed names are compile errors when called.
    let err = Program::expression("open('x')").unwrap_err();
    assert!(err.msg.contains("`open` is not allowed"));
    let err = Program::expression("x.__dict__").unwrap_err();
    assert_eq!((err.line, err.col), (1, 3));
    // ... but a field may be called `open` (stock prices, say).
    assert_eq!(ev("open > 10", &record! {"open" => 12}), Value::Bool(true));
}

#[test]
fn fields_read_lists_free_names() {
    let p = Program::expression(
        "temp > 20 and device.startswith('a') and len(tags) > 0 and [t for t in tags]",
    )
    .unwrap();
    assert_eq!(p.fields_read(), vec!["temp", "device", "tags"]);
    let p = Program::callable("lambda row: row.a + row['b'] + len(row.c)").unwrap();
    assert_eq!(p.fields_read(), vec!["a", "b", "c"]);
}

#[test]
fn program_is_send_sync_and_cheap_to_clone() {
    fn check<T: Send + Sync + Clone>() {}
    check::<Program>();
    let p = Program::expression("x * 2").unwrap();
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let p = p.clone();
            std::thread::spawn(move || p.eval(&record! {"x" => i}).unwrap())
        })
        .collect();
    let got: Vec<Value> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(got, vec![0.into(), 2.into(), 4.into(), 6.into()]);
}

#[test]
fn field_order_changes_between_records() {
    let p = Program::expression("a - b").unwrap();
    assert_eq!(
        p.eval(&record! {"a" => 5, "b" => 1}).unwrap(),
        Value::Int(4)
    );
    assert_eq!(
        p.eval(&record! {"b" => 1, "a" => 5}).unwrap(),
        Value::Int(4)
    );
    assert_eq!(
        p.eval(&record! {"z" => 0, "b" => 2, "a" => 5}).unwrap(),
        Value::Int(3)
    );
}

#[test]
fn bulk_work_is_charged() {
    // Each comparison of two long lists costs in proportion to their length.
    let p = Program::callable("def f(row):\n    xs = list(range(100000))\n    ys = list(range(100000))\n    return sum(1 for _ in range(10**6) if xs == ys)\n").unwrap();
    assert!(
        p.eval(&Record::default())
            .unwrap_err()
            .msg
            .contains("step budget")
    );
    let p = Program::callable("def f(row):\n    xs = list(range(100000))\n    return len([str(xs) for _ in range(10**6)])\n").unwrap();
    assert!(
        p.eval(&Record::default())
            .unwrap_err()
            .msg
            .contains("step budget")
    );
    let p = Program::callable("def f(row):\n    t = tuple(range(100000))\n    d = {t: 1}\n    return sum(d[t] for _ in range(10**6))\n").unwrap();
    assert!(
        p.eval(&Record::default())
            .unwrap_err()
            .msg
            .contains("step budget")
    );
    // Repeating an empty sequence any number of times is instant.
    assert_eq!(e("[] * 10**18"), list(vec![]));
    assert_eq!(e("'' * 10**18"), s(""));
    assert!(e_err("[[]] * 10**18").starts_with("MemoryError"));
}

#[test]
fn dedent_tolerates_unicode_blank_lines() {
    let p = Program::callable("  def f(r):\n\u{a0}\u{a0}\u{a0}\n      return 1\n").unwrap();
    assert_eq!(p.eval(&Record::default()).unwrap(), Value::Int(1));
}

/// The error of a callable over an empty record.
fn call_err(src: &str) -> String {
    match Program::callable(src)
        .unwrap_or_else(|e| panic!("compile {src:?}: {e}"))
        .eval(&Record::default())
    {
        Ok(v) => panic!("{src:?} should fail, gave a {}", v.type_name()),
        Err(e) => e.msg,
    }
}

#[test]
fn shared_structure_cannot_bypass_the_limits() {
    let t = std::time::Instant::now();
    // one 10 MB string, a thousand references: 10 GB once it leaves
    let err = call_err("def f(row):\n    return ['a' * 10**7] * 1000\n");
    assert!(
        err.starts_with("MemoryError: expression memory limit of 64 MB exceeded"),
        "{err}"
    );
    // x = [x, x] thirty times: 2**30 leaves, shared
    let doubling = "    x = []\n    for i in range(30):\n        x = [x, x]\n";
    let err = call_err(&format!("def f(row):\n{doubling}    return x\n"));
    assert!(err.contains("memory limit"), "{err}");
    let err = call_err(&format!(
        "def f(row):\n{doubling}    y = []\n    for i in range(30):\n        y = [y, y]\n    return x == y\n"
    ));
    assert!(err.contains("step budget exhausted"), "{err}");
    let err = call_err(
        "def f(row):\n    t = ()\n    for i in range(30):\n        t = (t, t)\n    return len({t})\n",
    );
    assert!(err.contains("step budget exhausted"), "{err}");
    // hashing and comparing long strings is charged by their length
    for src in [
        "len(set(['a' * 10**6] * 1000))",
        "sorted(['a' * 10**6, 'a' * 10**6 + 'b'] * 500)",
        "(['a' * 10**6] * 1000).count('a' * 10**6)",
    ] {
        let err = e_err(src);
        assert!(err.contains("step budget exhausted"), "{src}: {err}");
    }
    // the ordinary cases still work
    assert_eq!(e("len(set(['ab'] * 1000))"), Value::Int(1));
    assert_eq!(
        call("def f(row):\n    return ['ab'] * 3\n", &Record::default()),
        Value::List(vec![Value::String("ab".into()); 3])
    );
    assert!(
        t.elapsed() < std::time::Duration::from_secs(30),
        "the limits held, but slowly: {:?}",
        t.elapsed()
    );
}

/// The divergences from CPython a differential run found (issue 22), each
/// with CPython 3's answer.
#[test]
fn cpython_agrees_on_the_found_divergences() {
    let cases: &[(&str, Value)] = &[
        ("int('٣4')", Value::Int(34)),
        ("float('٣4')", Value::Float(34.0)),
        ("int(' ٣4 ')", Value::Int(34)),
        ("'%5s]' % 'a'", s("    a]")),
        ("'%-5s]' % 'a'", s("a    ]")),
        ("'%3c' % 'a'", s("  a")),
        ("pow(3, -1, 7)", Value::Int(5)),
        ("pow(3, -1, -7)", Value::Int(-2)),
        ("pow(2, -1, 1)", Value::Int(0)),
        ("re.escape(',')", s(",")),
        ("re.escape('a.b c-d')", s("a\\.b\\ c\\-d")),
        (
            "15 / 9007199254740993",
            Value::Float(1.6653345369377346e-15),
        ),
        ("9007199254740993 / 3", Value::Float(3002399751580331.0)),
        (
            "-7 / 9007199254740993",
            Value::Float(-7.771561172376095e-16),
        ),
        ("re.sub('x*', '-', 'abxd')", s("-a-b--d-")),
        (
            "re.split('x*', 'abxd')",
            list(vec![s(""), s("a"), s("b"), s(""), s("d"), s("")]),
        ),
        ("''.startswith('', 3)", Value::Bool(false)),
        ("'abc'.find('', 5)", Value::Int(-1)),
        ("'abc'.count('', 5)", Value::Int(0)),
        ("'abc'.endswith('', 2)", Value::Bool(true)),
        ("round(2.459475e+302, -1)", Value::Float(2.459475e+302)),
        ("round(1234.5, -1)", Value::Float(1230.0)),
        ("round(1250.0, -2)", Value::Float(1200.0)),
        ("round(1350.0, -2)", Value::Float(1400.0)),
        ("str(math.fmod(math.nan, 0.0))", s("nan")),
        ("math.fmod(1.0, math.inf)", Value::Float(1.0)),
        ("(-math.inf) ** 0.5", Value::Float(f64::INFINITY)),
        ("0.0 ** -math.inf", Value::Float(f64::INFINITY)),
        ("'ß'.title()", s("Ss")),
        ("'ǆemal'.capitalize()", s("ǅemal")),
        ("'ab中cd'.title()", s("Ab中Cd")),
        ("'ﬁ'.casefold()", s("fi")),
        ("'ΣΑΣ'.casefold()", s("σασ")),
        ("'ΣΑΣ'.swapcase()", s("σας")),
        ("'ΣΑΣ'.title()", s("Σας")),
        ("'ΑΣ'.capitalize()", s("Ας")),
    ];
    for (src, want) in cases {
        assert_eq!(&e(src), want, "{src}");
    }
    for (src, want) in [
        ("'{:,}'.format('a')", "Cannot specify ',' with 's'."),
        ("'{:,x}'.format(255)", "Cannot specify ',' with 'x'."),
        ("pow(2, -1, 4)", "base is not invertible"),
        ("'abc'.index('', 5)", "substring not found"),
        ("math.fmod(1.0, 0.0)", "math domain error"),
        ("'{:#}'.format('a')", "Alternate form (#) not allowed"),
    ] {
        let got = e_err(src);
        assert!(got.contains(want), "{src}: {got}");
    }
    // Python's `\w` and `\s`, not the regex crate's
    for (src, want) in [
        (r"re.findall(r'\w+', 'x²½')", list(vec![s("x²½")])),
        (r"re.findall(r'\w', 'e\u0301')", list(vec![s("e")])),
        (r"re.split(r'\s', 'b\x1cc')", list(vec![s("b"), s("c")])),
        (
            r"re.findall(r'[^\W\d]+', 'ab12c')",
            list(vec![s("ab"), s("c")]),
        ),
        (
            r"re.findall(r'[\S]+', 'a\x1fb c')",
            list(vec![s("a"), s("b"), s("c")]),
        ),
        (r"re.findall(r'[\W]', 'a-b', re.A)", list(vec![s("-")])),
    ] {
        assert_eq!(e(src), want, "{src}");
    }
    // a map inside a record is a dict to `reversed` and `get`
    let mut m = rill_core::Fields::default();
    m.insert("a".into(), Value::Int(1));
    m.insert("b".into(), Value::Int(2));
    let r = rill_core::record! {"d" => Value::Map(m)};
    assert_eq!(ev("list(reversed(d))", &r), list(vec![s("b"), s("a")]));
    let got = Program::expression("d.get([1], 2)")
        .unwrap()
        .eval(&r)
        .unwrap_err();
    assert!(
        got.msg.starts_with("TypeError: unhashable type: 'list'"),
        "{got}"
    );
    let got = Program::expression("d[[1]]").unwrap().eval(&r).unwrap_err();
    assert!(got.msg.starts_with("TypeError"), "{got}");
}
