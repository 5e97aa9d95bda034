"""Not a table of the paper: gatezoo's attention seq2seq against fairseq's ``lstm_wiseman_iwslt_de_en`` on the data,
budget and scoring of G2 Table 2's quick De->En column, one change at a time from Table 2's quick model to fairseq's
configuration (``conf/recipe/fairseq_wiseman.yaml``); the fairseq rows come from ``reproduce/fairseq_baseline.py``.

    python reproduce/parity_g2lstm.py --seeds 2 --workers 2     # the gatezoo rows: about 10 min a run on one core
    python reproduce/fairseq_baseline.py --fairseq-bin ~/fairseq-venv/bin --threads 1 --seed 2
    python reproduce/parity_g2lstm.py --collect                 # the table

The rows and settings: conf/experiment/parity_g2lstm.yaml; what was found: docs/tasks.md (fairseq baseline).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from a plain checkout too

from reproduce.runner import main  # noqa: E402

if __name__ == "__main__":
    main("parity_g2lstm")
