#!/usr/bin/env python3
"""Merges the sections of the parts that ran into the report, keeping every other section.

    sections.py REPORT.md RESULTS_DIR PART...

Each part's section is RESULTS_DIR/PART.md; in the report it sits between
"<!-- bench:PART begin -->" and "<!-- bench:PART end -->". A part seen for the first time is
appended. The report is replaced atomically.
"""
import os
import re
import sys

HEADER = (
    "# Benchmarks\n\n"
    "Produced by `bench/run` (see `bench/README.md`); each section says on which machine, when and\n"
    "by which command its numbers were made. Re-run a part with `bench/run PART`.\n"
)


def merge(text, sections):
    """TEXT (the report so far, or None for a new one) with each (part, body) of SECTIONS in place."""
    if text is None:
        text = HEADER
    for part, body in sections:
        body = body.rstrip("\n")
        section = f"<!-- bench:{part} begin -->\n{body}\n<!-- bench:{part} end -->"
        pattern = re.compile(rf"<!-- bench:{re.escape(part)} begin -->.*?<!-- bench:{re.escape(part)} end -->",
                             re.S)
        if pattern.search(text):
            text = pattern.sub(lambda _: section, text)
        else:
            text = text.rstrip("\n") + "\n\n" + section + "\n"
    return text


def main(argv):
    out, results, *parts = argv
    sections = []
    for part in parts:
        with open(os.path.join(results, part + ".md")) as f:
            sections.append((part, f.read()))
    text = None
    if os.path.exists(out):
        with open(out) as f:
            text = f.read()
    tmp = out + ".tmp"
    with open(tmp, "w") as f:
        f.write(merge(text, sections))
    os.replace(tmp, out)


if __name__ == "__main__":
    main(sys.argv[1:])
