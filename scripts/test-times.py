#!/usr/bin/env python3
"""Print every test's time from cargo-nextest's JUnit files, the slowest first, with each
binary's total: what the next issue's tests can be budgeted against.

Usage: scripts/test-times.py JUNIT.xml [JUNIT.xml ...]"""
import sys
import xml.etree.ElementTree as ET

rows, totals = [], {}
for path in sys.argv[1:]:
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as e:
        print(f"test-times: {path}: {e}", file=sys.stderr)
        continue
    for case in root.iter("testcase"):
        t = float(case.get("time", "0"))
        binary = case.get("classname", "?")
        status = "FAIL" if case.find("failure") is not None or case.find("error") is not None else "ok"
        rows.append((t, binary, case.get("name", "?"), status))
        totals[binary] = totals.get(binary, 0.0) + t
rows.sort(reverse=True)
print("== per-test times, slowest first (seconds)")
for t, binary, name, status in rows:
    print(f"{t:8.1f}  {status:4}  {binary}::{name}")
for binary, t in sorted(totals.items(), key=lambda x: -x[1]):
    print(f"{t:8.1f}  total {binary}")
print(f"{sum(totals.values()):8.1f}  total of {len(rows)} tests")
