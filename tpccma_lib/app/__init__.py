"""The program built on the library: the ``tpccma`` command (``cli``), the papermill alpha sweep
(``sweep``), the notebook runner and HTML report (``notebooks``), README tables (``readme``) and
kernel clean-up on Ctrl-C (``kernels``). Nothing in the library imports from here."""
