#!/usr/bin/env python3
"""Lists functions longer than a limit (default 80 lines) outside tests, longest first.

    python3 scripts/long_functions.py [--limit 80]
"""
import os
import re
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def main():
    limit = 80
    if "--limit" in sys.argv:
        limit = int(sys.argv[sys.argv.index("--limit") + 1])
    found = []
    for crate in ("gateway", "adapters", "policies"):
        for root, _, files in os.walk(os.path.join(ROOT, crate, "src")):
            for f in files:
                if not f.endswith(".rs"):
                    continue
                path = os.path.join(root, f)
                lines = open(path, encoding="utf-8").read().split("\n")
                end = next((i for i, l in enumerate(lines) if l.startswith("#[cfg(test)]")), len(lines))
                for i in range(end):
                    m = re.match(r"^(\s*)(pub(\([^)]*\))? )?(async )?fn (\w+)", lines[i])
                    if not m:
                        continue
                    indent = len(m.group(1))
                    j = i + 1
                    while j < end and not (
                        lines[j].startswith(" " * indent + "}")
                        and len(lines[j]) - len(lines[j].lstrip()) == indent
                    ):
                        j += 1
                    if j - i + 1 > limit:
                        found.append((j - i + 1, os.path.relpath(path, ROOT), i + 1, m.group(5)))
    for n, path, line, name in sorted(found, reverse=True):
        print(f"{n:4} {path}:{line} {name}")


if __name__ == "__main__":
    main()
