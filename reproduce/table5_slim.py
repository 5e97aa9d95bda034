"""Akandeh & Salem, Table 5: IMDB, lstm6 with 100-400 hidden units x eta.

The grid and hyper-parameters: conf/experiment/table5_slim.yaml; the printed numbers: reproduce/published/.
`python reproduce/table5_slim.py --help` lists the options
(--preset, --seeds, --cells, --collect, Hydra overrides).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from a plain checkout too

from reproduce.runner import main  # noqa: E402

if __name__ == "__main__":
    main("table5_slim")
