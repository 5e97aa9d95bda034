"""Greff et al. 2017, "LSTM: A Search Space Odyssey" on JSB Chorales: the nine variants' test NLL over their random
searches (Fig. 3's box plots, all trials and the best 10 % by validation), Welch's t-tests against the vanilla LSTM
(Bonferroni-corrected) and the paper's conclusions on the variants, checked on this study.

It runs (or continues) the same study as the other figure's script (conf/experiment/fig_variants_odyssey.yaml,
reproduce/study.py: resumable, --workers, --launcher slurm); `--collect` analyses the finished trials only.
`python reproduce/fig_variants_odyssey.py --help` lists the options.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from a plain checkout too

from reproduce.runner import main  # noqa: E402

if __name__ == "__main__":
    main("fig_variants_odyssey", analysis="variants")
