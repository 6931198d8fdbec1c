#!/usr/bin/env python3
"""Every test suite must carry the `.ownThread` trait (Tests/TestThreads/OwnThreadTrait.swift): without it, its
tests run on the two-thread cooperative pool, where one that blocks holds up every other suite's tests."""
import glob
import os
import sys

root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
missing = []
for path in sorted(glob.glob(os.path.join(root, "Tests", "*Tests", "*.swift"))):
    text = open(path, encoding="utf-8").read()
    start = 0
    while (at := text.find("@Suite", start)) >= 0:
        depth, end, in_string = 0, at + len("@Suite"), False
        if end < len(text) and text[end] == "(":
            while True:
                c = text[end]
                if in_string:
                    if c == "\\":
                        end += 1
                    elif c == '"':
                        in_string = False
                elif c == '"':
                    in_string = True
                elif c == "(":
                    depth += 1
                elif c == ")":
                    depth -= 1
                    if depth == 0:
                        break
                end += 1
        if ".ownThread" not in text[at:end + 1]:
            line = text.count("\n", 0, at) + 1
            missing.append(f"{os.path.relpath(path, root)}:{line}")
        start = end + 1
if missing:
    print("suites without the .ownThread trait (add it: each test case then runs on a thread of its own):")
    print("\n".join("  " + m for m in missing))
    sys.exit(1)
print("suite check: every suite runs its tests on threads of their own")
