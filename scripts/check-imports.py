#!/usr/bin/env python3
"""Checks every target's imports of this package's own modules against architecture/dependencies.txt, and
that executables stay thin mains; with `--manifest`, that Package.swift declares no dependency the graph forbids. `--mermaid` prints the allowed graph of libraries and executables as a
Mermaid diagram (the picture in docs/ARCHITECTURE.md). Exit status 1 on any violation, with one line each."""

import json
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GRAPH = os.path.join(ROOT, "architecture", "dependencies.txt")
IMPORT = re.compile(r"^\s*(?:@[\w()]+\s+)*import\s+(?:(?:struct|class|enum|protocol|func|var|let|typealias)\s+)?([A-Za-z_]\w*)")
SCANNED = ("Sources", "Tests", "benchmarks")


def read_graph():
    targets = {}
    with open(GRAPH) as graph:
        for number, line in enumerate(graph, 1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            head, _, allowed = line.partition(":")
            words = head.split()
            if len(words) not in (3, 4) or words[0] not in ("c", "library", "executable", "test", "support"):
                sys.exit(f"{GRAPH}:{number}: expected '<kind> <target> <directory> [max-lines]: <modules>'")
            kind, name, directory = words[:3]
            limit = int(words[3]) if len(words) == 4 else None
            targets[name] = {"kind": kind, "directory": directory, "limit": limit, "allowed": set(allowed.split())}
    return targets


def swift_files(directory):
    for base, _, names in os.walk(os.path.join(ROOT, directory)):
        for name in sorted(names):
            if name.endswith(".swift"):
                yield os.path.join(base, name)


def check(targets):
    problems = []
    modules = set(targets)
    known = {target["directory"] for target in targets.values()}
    for top in SCANNED:
        for entry in sorted(os.listdir(os.path.join(ROOT, top))):
            directory = f"{top}/{entry}"
            if os.path.isdir(os.path.join(ROOT, directory)) and directory not in known:
                problems.append(f"{directory}: a target directory that architecture/dependencies.txt does not list")
    for name, target in sorted(targets.items()):
        lines = 0
        for path in swift_files(target["directory"]):
            relative = os.path.relpath(path, ROOT)
            in_string = False
            with open(path, encoding="utf-8") as source:
                for number, text in enumerate(source, 1):
                    if text.count('"""') % 2 == 1:
                        in_string = not in_string
                    if text.strip():
                        lines += 1
                    match = None if in_string else IMPORT.match(text)
                    if not match:
                        continue
                    module = match.group(1)
                    if module in modules and module != name and module not in target["allowed"]:
                        problems.append(
                            f"{relative}:{number}: {target['kind']} {name} imports {module}, which the graph does not allow "
                            f"(allowed: {', '.join(sorted(target['allowed'])) or 'none of this package'})")
        if target["limit"] is not None and lines > target["limit"]:
            problems.append(
                f"{target['directory']}: executable {name} has {lines} lines; a thin main has at most {target['limit']} "
                "(move the logic into a library)")
    return problems


def cycles(targets):
    """The allowed graph must be a partial order: a library may not, through any chain, import itself."""
    problems = []
    state = {}

    def visit(name, path):
        if state.get(name) == "done":
            return
        if state.get(name) == "open":
            problems.append("the allowed graph has a cycle: " + " -> ".join(path[path.index(name):] + [name]))
            return
        state[name] = "open"
        for module in sorted(targets[name]["allowed"] & set(targets)):
            visit(module, path + [name])
        state[name] = "done"

    for name in sorted(targets):
        visit(name, [])
    return problems


def manifest(targets):
    """Package.swift must declare no dependency the graph forbids (with --manifest; needs `swift`)."""
    dump = subprocess.run(["swift", "package", "dump-package"], cwd=ROOT, capture_output=True, text=True)
    if dump.returncode != 0:
        return [f"swift package dump-package failed: {dump.stderr.strip()}"]
    problems = []
    for target in json.loads(dump.stdout)["targets"]:
        name = target["name"]
        if name not in targets:
            problems.append(f"Package.swift: target {name} is not in architecture/dependencies.txt")
            continue
        for dependency in target.get("dependencies", []):
            module = (dependency.get("byName") or dependency.get("target") or [None])[0]
            if module in targets and module not in targets[name]["allowed"]:
                problems.append(f"Package.swift: {name} depends on {module}, which the graph does not allow")
    return problems


def mermaid(targets):
    print("graph TD")
    shown = {name for name, target in targets.items() if target["kind"] in ("library", "executable")}
    for name in sorted(shown):
        for module in sorted(targets[name]["allowed"] & shown):
            print(f"    {name} --> {module}")


def main():
    targets = read_graph()
    if "--mermaid" in sys.argv:
        mermaid(targets)
        return
    problems = cycles(targets) + check(targets)
    if "--manifest" in sys.argv:
        problems += manifest(targets)
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        print(f"import check: {len(problems)} problem(s); the allowed graph is {os.path.relpath(GRAPH, ROOT)}", file=sys.stderr)
        sys.exit(1)
    print(f"import check: {len(targets)} targets follow {os.path.relpath(GRAPH, ROOT)}")


main()
