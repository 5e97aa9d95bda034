"""Akandeh & Salem, Fig. 7 and sec. 4.1.3: IMDB with the sigmoid activation at eta 1e-5, the standard LSTM against
LSTM_6 with its constant forget value f raised from 0.59 towards 0.96.

The training and test accuracy per epoch of every row (as the paper's figure: one PNG per metric, one panel per
learning rate) and each row's best test accuracy, with the claims the paper makes about the figure tested over the
seeds. The rows and settings: conf/experiment/fig_forget_slim.yaml;
the drawn figure: docs/results.md#fig_forget_slim.

    python reproduce/fig_forget_slim.py [--preset paper|quick|smoke] [--seeds N] [--workers 2] [--collect]
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from a plain checkout too

from reproduce.runner import main  # noqa: E402

if __name__ == "__main__":
    main("fig_forget_slim")
