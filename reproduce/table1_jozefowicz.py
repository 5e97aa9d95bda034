"""Jozefowicz et al. 2015, Table 1: next-step accuracy of ten architectures on Arith, XML and PTB, each cell the best
trial of a random search (reproduce/study.py: Optuna studies, resumable, parallel workers).

The grid and hyper-parameters: conf/experiment/table1_jozefowicz.yaml; the printed numbers: reproduce/published/.
`python reproduce/table1_jozefowicz.py --help` lists the options
(--preset, --workers, --storage, --seeds, --cells, --collect, --launcher, Hydra overrides).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from a plain checkout too

from reproduce.runner import main  # noqa: E402

if __name__ == "__main__":
    main("table1_jozefowicz")
