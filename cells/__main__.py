"""``python -m cells [--input-size M --hidden-size N] [--describe NAME]``: the table of every registered cell."""
from __future__ import annotations

import argparse

from rich.console import Console
from rich.table import Table

from . import describe, get, names


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m cells", description=__doc__)
    ap.add_argument("--input-size", "-m", type=int, default=128)
    ap.add_argument("--hidden-size", "-n", type=int, default=128)
    ap.add_argument("--describe", metavar="NAME", help="print one cell's equations and details")
    args = ap.parse_args(argv)
    console = Console(width=max(Console().width, 100))
    if args.describe:
        print(describe(args.describe))
        return
    m, n = args.input_size, args.hidden_size
    table = Table(title=f"gatezoo cells (m = {m}, n = {n}; one direction, one layer)")
    for col in ("cell", "paper", "parameters", "formula", "exact backends"):
        table.add_column(col, justify="right" if col == "parameters" else "left")
    for name in names():
        cls = get(name)
        table.add_row(name, cls.paper, f"{cls.count(m, n):,}", cls.formula, ", ".join(cls.exact_backends()))
    console.print(table)
    console.print("python -m cells --describe NAME  shows a cell's equations.")


if __name__ == "__main__":
    main()
