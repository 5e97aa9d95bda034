"""Akandeh & Salem, Table 2: parameter counts of a bidirectional lstm / lstm6 / lstm_c6 layer at m=n=128 (News20).

Instant: no training; the counts come from the cells' formulas and are checked against what a built layer allocates.
The printed numbers: reproduce/published/slim.yaml.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from a plain checkout too

from reproduce.runner import params_table  # noqa: E402

if __name__ == "__main__":
    params_table("table2_slim")
