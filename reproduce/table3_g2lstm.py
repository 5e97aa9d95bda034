"""Li et al. 2018 (G2-LSTM), Table 3: test perplexity of Table 1's models after compressing their input- and forget-gate
parameters (round, round & clip, SVD). Trains nothing: run reproduce/table1_g2lstm.py with the same preset first.

The grid and settings: conf/experiment/table3_g2lstm.yaml; the printed numbers: reproduce/published/.
`python reproduce/table3_g2lstm.py --help` lists the options
(--preset, --seeds, --cells, --collect, Hydra overrides).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from a plain checkout too

from reproduce.runner import main  # noqa: E402

if __name__ == "__main__":
    main("table3_g2lstm")
