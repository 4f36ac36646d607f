#!/usr/bin/env python3
"""Print every test's time from cargo-nextest's JUnit files, the slowest first, with each
binary's total: what the next issue's tests can be budgeted against. Then each test's start and
end in its run (the two lanes' timeline) and, for the tests that name their steps (the
harness's `Steps`: "--- step: NAME (the step before took N s)" on stderr, which the JUnit file
keeps), where their time went.

Usage: scripts/test-times.py JUNIT.xml [JUNIT.xml ...]"""
import re
import sys
import xml.etree.ElementTree as ET
from datetime import datetime

STEP = re.compile(r"^--- step: (.*) \(the step before took ([0-9.]+) s\)$")
LAST = re.compile(r"^--- the last step took ([0-9.]+) s$")
rows, totals, timeline, steps = [], {}, [], {}
for path in sys.argv[1:]:
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as e:
        print(f"test-times: {path}: {e}", file=sys.stderr)
        continue
    for case in root.iter("testcase"):
        t = float(case.get("time", "0"))
        binary = case.get("classname", "?")
        name = f"{binary}::{case.get('name', '?')}"
        status = "FAIL" if case.find("failure") is not None or case.find("error") is not None else "ok"
        rows.append((t, name, status))
        totals[binary] = totals.get(binary, 0.0) + t
        if case.get("timestamp"):
            start = datetime.fromisoformat(case.get("timestamp").replace("Z", "+00:00")).timestamp()
            timeline.append((start, t, name))
        err = case.findtext("system-err") or ""
        named, previous = [], "setup"
        for line in err.splitlines():
            m = STEP.match(line.strip())
            if m:
                named.append((float(m.group(2)), previous))
                previous = m.group(1)
            m = LAST.match(line.strip())
            if m and named:
                named.append((float(m.group(1)), previous))
                previous = None
        if named:
            if previous is not None:
                named.append((None, previous))
            steps[name] = named
rows.sort(reverse=True)
print("== per-test times, slowest first (seconds)")
for t, name, status in rows:
    print(f"{t:8.1f}  {status:4}  {name}")
for binary, t in sorted(totals.items(), key=lambda x: -x[1]):
    print(f"{t:8.1f}  total {binary}")
print(f"{sum(totals.values()):8.1f}  total of {len(rows)} tests")
if timeline:
    t0 = min(s for s, _, _ in timeline)
    print("== timeline: start and end of each test (seconds since the run's first test)")
    for s, t, name in sorted(timeline):
        print(f"{s - t0:7.0f} {s - t0 + t:7.0f}  {name}")
if steps:
    print("== steps of the tests that name them (seconds; a blank: the step the test failed in)")
    for name, named in sorted(steps.items()):
        print(name)
        for took, step in named:
            print(f"  {'' if took is None else f'{took:7.1f}':>7}  {step}")
