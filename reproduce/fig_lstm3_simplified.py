"""Lu & Salem 2017, Fig. 3: LSTM3's test accuracy per epoch on pixel-wise MNIST at eta0 = 1e-4 and 1e-5 (the text:
0.7404 after 200 epochs at 1e-5).

The training and test accuracy per epoch of every row (as the paper's figure: one PNG per metric, one panel per
learning rate) and each row's best test accuracy, with the claims the paper makes about the figure tested over the
seeds. The rows and settings: conf/experiment/fig_lstm3_simplified.yaml;
the drawn figure: docs/results.md#fig_lstm3_simplified.

    python reproduce/fig_lstm3_simplified.py [--preset paper|quick|smoke] [--seeds N] [--workers 2] [--collect]
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from a plain checkout too

from reproduce.runner import main  # noqa: E402

if __name__ == "__main__":
    main("fig_lstm3_simplified")
