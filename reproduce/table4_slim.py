"""Akandeh & Salem, Table 4: IMDB with sigmoid activation, lstm / lstm6 / lstm_c6 x eta.

The grid and hyper-parameters: conf/experiment/table4_slim.yaml; the printed numbers: reproduce/published/.
`python reproduce/table4_slim.py --help` lists the options
(--preset, --seeds, --cells, --collect, Hydra overrides).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from a plain checkout too

from reproduce.runner import main  # noqa: E402

if __name__ == "__main__":
    main("table4_slim")
