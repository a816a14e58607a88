"""The modality gap: its metrics and exact decomposition (``metrics``), training-free fixes
(``posthoc``), numeric checks behind notebook 01 (``checks``) and the uncertainty of every gap
number (``uncertainty``)."""
