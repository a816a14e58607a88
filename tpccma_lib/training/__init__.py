"""Training: the CLIP and CMA losses (``losses``), the three-phase curriculum and the
gradient-aware scheduler (``curriculum``, ``lr_tempering``), the loop (``loop``), DDP helpers
(``distributed``), fine-tuning runs on disk (``runs``) and the matched-gap search
(``matched_gap``)."""
