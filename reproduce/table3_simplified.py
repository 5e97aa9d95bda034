"""Lu & Salem 2017, Table III: IMDB, each cell x each eta0.

The grid and hyper-parameters: conf/experiment/table3_simplified.yaml; the printed numbers: reproduce/published/.
`python reproduce/table3_simplified.py --help` lists the options
(--preset, --seeds, --cells, --collect, Hydra overrides).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from a plain checkout too

from reproduce.runner import main  # noqa: E402

if __name__ == "__main__":
    main("table3_simplified")
