#!/usr/bin/env python3
"""Writes the seed corpora (fuzz/seeds/<target>/) from the string literals of the table tests
beside the code, so the fuzzers start from every case the tests already name. Run it again
when the tables change; the seeds are committed."""
import ast, hashlib, os, re, struct, sys

here = os.path.dirname(os.path.abspath(__file__))
src = os.path.join(here, "..", "server", "src")

def literals(path):
    """Every Rust string or byte-string literal in the file, as bytes (simple escapes only)."""
    text = open(path, encoding="utf-8").read()
    out = []
    for m in re.finditer(r'b?"((?:[^"\\]|\\.)*)"', text):
        body = m.group(1)
        if "{" in body and "}" in body and not m.group(0).startswith("b"):
            continue  # a format string, not a case
        py = body.replace("\\0", "\\x00")
        try:
            val = ast.literal_eval('b"' + py + '"') if m.group(0).startswith("b") else ast.literal_eval('"' + py + '"').encode()
        except Exception:
            continue
        out.append(val)
    return out

def write(target, cases):
    d = os.path.join(here, "seeds", target)
    os.makedirs(d, exist_ok=True)
    for c in set(cases):
        name = hashlib.sha1(c).hexdigest()[:16]
        with open(os.path.join(d, name), "wb") as f:
            f.write(c)
    print(f"{target}: {len(set(cases))} seeds")

methods = (b"GET", b"HEAD", b"POST", b"PUT", b"OPTIONS", b"DELETE", b"BREW", b"\r\n")
parse_lits = literals(os.path.join(src, "http", "parse.rs"))
write("head", [l for l in parse_lits if l.startswith(methods)])
chunks = [l for l in parse_lits if re.match(rb"^[0-9a-fA-Fx+ \-\r]", l) and b"\r\n" in l and not l.startswith(methods)]
write("chunked", [bytes([0]) + c for c in chunks] + [bytes([3, 1, 2, 3]) + c for c in chunks])
path_lits = [l for l in literals(os.path.join(src, "http", "path.rs")) if l.startswith(b"/") or l in (b"", b"a", b"*")]
write("path", [bytes([0]) + p for p in path_lits] + [bytes([1]) + p for p in path_lits])
range_lits = [l for l in literals(os.path.join(src, "http", "range.rs")) if l.lower().startswith(b"bytes") or l.startswith(b"items")]
write("range", [struct.pack("<Q", n) + r for r in range_lits for n in (0, 10, 1000)])
cond = [l for l in literals(os.path.join(src, "http", "conditional.rs")) if 0 < len(l) < 64]
t = struct.pack("<Q", 784111777)
write("conditional", [bytes([flags]) + t + b"\0".join(cond[i:i + 5]) for flags in (0x3f, 0x0b, 0x15) for i in range(0, len(cond), 3)])
configs = [l for l in literals(os.path.join(src, "config.rs")) if l.startswith(b"[")]
readme = open(os.path.join(here, "..", "README.md"), encoding="utf-8").read()
configs += [m.encode() for m in re.findall(r"```toml\n(.*?)```", readme, re.S)]
write("config", configs)
