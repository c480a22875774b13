#!/usr/bin/env python3
"""Fails when modules of a crate import each other, directly or around a loop.

Every `crate::`, `super::` and `self::` path in a module's non-test code (use declarations,
groups such as `use crate::{a, b::c}`, and paths written inline) is resolved to the module it
names; the strongly connected components of that graph with more than one module are cycles.
A module's own submodules and its parents do not count (a parent declares its children).

    python3 scripts/module_cycles.py            # every crate of the workspace
    python3 scripts/module_cycles.py --graph    # also print each module's imports
"""
import os
import re
import sys

CRATES = ("gateway", "gateway/config-file", "adapters", "policies", "tests")
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def modules(src):
    found = {}
    for root, _, files in os.walk(src):
        for f in files:
            if not f.endswith(".rs"):
                continue
            rel = os.path.relpath(os.path.join(root, f), src)[:-3].split(os.sep)
            if rel[-1] in ("mod", "lib", "main"):
                rel = rel[:-1]
            text = open(os.path.join(root, f), encoding="utf-8").read()
            text = text.split("#[cfg(test)]")[0]
            text = re.sub(r"//[^\n]*", "", text)  # comments and docs name modules without using them
            found[tuple(rel)] = text
    return found


def expand(path):
    """`a::{b, c::{d}}` -> [`a::b`, `a::c::d`]."""
    m = re.match(r"^([\w:]*?)(::)?\{(.*)\}$", path, re.S)
    if not m:
        return [path]
    prefix, inner = m.group(1), m.group(3)
    parts, depth, cur = [], 0, ""
    for ch in inner:
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    out = []
    for p in parts:
        p = p.strip()
        if p:
            out += [f"{prefix}::{q}" if prefix else q for q in expand(p)]
    return out


def paths(text):
    for m in re.finditer(r"\buse\s+([^;]+);", text):
        yield from expand(re.sub(r"\s+", "", m.group(1)))
    for m in re.finditer(r"\b((?:crate|super|self)(?:::\w+)+)", text):
        yield m.group(1)


def resolve(module, path, known):
    segs = path.split("::")
    if segs[0] == "crate":
        base, rest = (), segs[1:]
    elif segs[0] in ("super", "self"):
        base = list(module)
        while segs and segs[0] in ("super", "self"):
            if segs[0] == "super" and base:
                base.pop()
            segs = segs[1:]
        base, rest = tuple(base), segs
    else:
        return None
    for k in range(len(rest), 0, -1):
        target = base + tuple(rest[:k])
        if target in known:
            return target
    return None


def cycles(crate):
    src = os.path.join(ROOT, crate, "src")
    if not os.path.isdir(src):
        return [], {}
    mods = modules(src)
    edges = {m: set() for m in mods}
    for m, text in mods.items():
        for p in paths(text):
            t = resolve(m, p, mods)
            if t is None or t == m or t[: len(m)] == m or m[: len(t)] == t:
                continue
            edges[m].add(t)
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]
    sys.setrecursionlimit(10000)

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in edges:
        if v not in index:
            visit(v)
    return out, edges


def name(m):
    return "::".join(m) or "(root)"


def main():
    found = False
    for crate in CRATES:
        loops, edges = cycles(crate)
        if "--graph" in sys.argv:
            for m in sorted(edges):
                print(f"{crate}: {name(m)} -> {', '.join(sorted(name(t) for t in edges[m]))}")
        for comp in loops:
            found = True
            inner = [f"{name(a)} -> {name(b)}" for a in comp for b in sorted(edges[a]) if b in comp]
            print(f"{crate}: cycle among {', '.join(name(m) for m in comp)}: {'; '.join(inner)}")
    if found:
        sys.exit(1)
    print("no import cycles between modules")


if __name__ == "__main__":
    main()
