"""Li et al. 2018 (G2-LSTM), Table 1: PTB perplexity of AWD-LSTM with lstm, sharpened_lstm and g2_lstm, before and
after finetune and with the continuous cache pointer; the paper's literature rows are printed as published.

The grid and hyper-parameters: conf/experiment/table1_g2lstm.yaml; the printed numbers: reproduce/published/.
`python reproduce/table1_g2lstm.py --help` lists the options
(--preset, --seeds, --cells, --collect, Hydra overrides).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from a plain checkout too

from reproduce.runner import main  # noqa: E402

if __name__ == "__main__":
    main("table1_g2lstm")
