"""Li et al. 2018 (G2-LSTM), Table 2: BLEU of the attention encoder-decoder with the LSTM, the sharpened-sigmoid LSTM
and G2-LSTM, WMT'14 En->De and IWSLT'14 De->En.

    python reproduce/table2_g2lstm.py                       # paper preset on a GPU, quick on a CPU
    python reproduce/table2_g2lstm.py --preset quick --workers 2   # offline, 2 CPU cores: docs/results.md has the time
    python reproduce/table2_g2lstm.py --collect             # the table from finished runs

The grid and hyper-parameters: conf/experiment/table2_g2lstm.yaml; the printed numbers: reproduce/published/.
Every BLEU is printed beside the number of training pairs it came from.
`python reproduce/table2_g2lstm.py --help` lists the options
(--preset, --seeds, --cells, --collect, Hydra overrides).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from a plain checkout too

from reproduce.runner import main  # noqa: E402

if __name__ == "__main__":
    main("table2_g2lstm")
