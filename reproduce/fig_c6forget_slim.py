"""Akandeh & Salem, Fig. 8: IMDB with the sigmoid activation at eta 1e-5, LSTM_C6 with h = 200 and its constant
forget value f raised from 0.59 to 0.95.

The training and test accuracy per epoch of every row (as the paper's figure: one PNG per metric, one panel per
learning rate) and each row's best test accuracy, with the claims the paper makes about the figure tested over the
seeds. The rows and settings: conf/experiment/fig_c6forget_slim.yaml;
the drawn figure: docs/results.md#fig_c6forget_slim.

    python reproduce/fig_c6forget_slim.py [--preset paper|quick|smoke] [--seeds N] [--workers 2] [--collect]
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from a plain checkout too

from reproduce.runner import main  # noqa: E402

if __name__ == "__main__":
    main("fig_c6forget_slim")
