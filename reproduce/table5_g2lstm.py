"""Li et al. 2018 (G2-LSTM), Table 5: BLEU of Table 2's WMT'14 En->De models after compressing their input- and
forget-gate parameters (round, round & clip, SVD rank 32 and 16). Trains nothing: run reproduce/table2_g2lstm.py with
the same preset first.

The grid and settings: conf/experiment/table5_g2lstm.yaml; the printed numbers: reproduce/published/.
`python reproduce/table5_g2lstm.py --help` lists the options
(--preset, --seeds, --cells, --collect, Hydra overrides).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from a plain checkout too

from reproduce.runner import main  # noqa: E402

if __name__ == "__main__":
    main("table5_g2lstm")
