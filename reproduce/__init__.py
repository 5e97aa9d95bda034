"""gatezoo reproduce: the top floor. The run kit (``kit``), the task kinds (``kinds/``), single runs (``train``), a
table's grid run here (``loop``) or as cluster jobs (``multirun``, ``job``), the report (``report``), and one script
per paper table (``table<N>_<key>.py``)."""
