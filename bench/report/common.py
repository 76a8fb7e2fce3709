"""Helpers shared by the report modules in bench/report/: statistics over repetitions and rounds,
Markdown tables and section headers, Google Benchmark JSON and onboard_loadgen JSON lines.

The modules are run as scripts by bench/run (python3 bench/report/NAME.py ...), which puts this
directory first on sys.path, so they import this one as `common`. Everything here is a function
of its arguments; nothing reads the environment.
"""
import json
import statistics

SMOKE_NOTE = "*Smoke run: {}; these numbers only show that the harness works.*"


def smoke_note(what):
    """The line that ends every section of a smoke run, saying what the run left out."""
    return SMOKE_NOTE.format(what)


def write_lines(path, lines):
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def echo_tables(lines, file=None):
    """Prints a section's table lines, the console's summary of a part."""
    print("\n".join(line for line in lines if line.startswith("|")), file=file)


# ---- statistics ------------------------------------------------------------------------------


def median(values):
    """The median of the values that are not None; NaN when there are none."""
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else float("nan")


def nearest_rank(sorted_values, p):
    """The P-quantile (0..1) of already sorted values by the nearest rank, the way the load
    generator computes its percentiles; NaN for no values."""
    n = len(sorted_values)
    if not n:
        return float("nan")
    return sorted_values[min(n - 1, int(p * (n - 1) + 0.5))]


def ratios(values, base):
    """Per-round ratios VALUE / BASE, leaving out rounds where either is missing or BASE is 0."""
    return [v / b for v, b in zip(values, base) if v is not None and b]


def summary(values):
    """(median, min, max), or None for no values."""
    if not values:
        return None
    return statistics.median(values), min(values), max(values)


def fmt_ratio(s):
    """A summary() as "**median** (min–max)"; "–" for None."""
    if s is None:
        return "–"
    return f"**{s[0]:.3f}** ({s[1]:.3f}–{s[2]:.3f})"


def count_label(n):
    """1000 -> "1k", 1000000 -> "1M", 1500 -> "1,500": fleet sizes in headings."""
    if n >= 1_000_000 and n % 1_000_000 == 0:
        return f"{n // 1_000_000:,}M"
    return f"{n // 1000:,}k" if n >= 1000 and n % 1000 == 0 else f"{n:,}"


# ---- Markdown --------------------------------------------------------------------------------


def row(cells):
    """One Markdown table row; an empty cell stays a single space wide."""
    return "|" + "|".join(f" {c} " if c != "" else " " for c in cells) + "|"


def table(columns, rows):
    """A Markdown table: COLUMNS is a list of (title, align) with align "l" or "r"; ROWS are lists
    of cells already formatted."""
    head = row([title for title, _ in columns])
    rule = "|" + "".join("---:|" if align == "r" else "---|" for _, align in columns)
    return [head, rule, *(row(r) for r in rows)]


def header(title, machine, text):
    """A section's head: its title, the machine description bench/run gives (several lines in
    one string) and the paragraph that says how the numbers were made."""
    return [f"## {title}", "", machine, "", *text, ""]


# ---- inputs ----------------------------------------------------------------------------------


def benchmark_runs(data, part, key=lambda b: b["run_name"]):
    """The iterations of a Google Benchmark JSON document, grouped by KEY(benchmark): {key:
    [benchmark, ...]} in the document's order. Fails naming the benchmark when one reported an
    error, or when there are no runs at all."""
    runs = {}
    for b in data["benchmarks"]:
        if b.get("error_occurred"):
            raise SystemExit(f"{part}: {b['name']} failed: {b.get('error_message', '?')}")
        if b.get("run_type") != "iteration":
            continue
        runs.setdefault(key(b), []).append(b)
    if not runs:
        raise SystemExit(f"{part}: the benchmark reported no runs")
    return runs


def read_json(path):
    with open(path) as f:
        return json.load(f)


def parse_json_lines(lines, source="input"):
    """onboard_loadgen's output: one JSON object per non-empty line, each with a "type"."""
    records = []
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line:
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise SystemExit(f"{source}:{number}: not a JSON line: {e}") from None
        if not isinstance(record, dict) or "type" not in record:
            raise SystemExit(f"{source}:{number}: not a JSON object with a \"type\"")
        records.append(record)
    return records


def read_json_lines(path):
    with open(path) as f:
        return parse_json_lines(f, path)
