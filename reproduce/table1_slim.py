"""Akandeh & Salem, Table 1: parameter counts of lstm / lstm6 / lstm_c6 at m=32, n=100 (IMDB).

Instant: no training; the counts come from the cells' formulas and are checked against what a built layer allocates.
The printed numbers: reproduce/published/slim.yaml.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from a plain checkout too

from reproduce.runner import params_table  # noqa: E402

if __name__ == "__main__":
    params_table("table1_slim")
