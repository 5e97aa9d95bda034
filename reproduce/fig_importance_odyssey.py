"""Greff et al. 2017, "LSTM: A Search Space Odyssey" on JSB Chorales: fANOVA importance of the hyper-parameters over the
variants' random searches (Optuna's FanovaImportanceEvaluator), the vanilla LSTM's marginals, and the paper's
conclusions on the hyper-parameters, checked on this study.

It runs (or continues) the same study as the other figure's script (conf/experiment/fig_variants_odyssey.yaml,
reproduce/study.py: resumable, --workers, --launcher slurm); `--collect` analyses the finished trials only.
`python reproduce/fig_importance_odyssey.py --help` lists the options.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from a plain checkout too

from reproduce.runner import main  # noqa: E402

if __name__ == "__main__":
    main("fig_variants_odyssey", analysis="importance")
