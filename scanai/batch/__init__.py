"""``scanai batch COMMAND MANIFEST --out DIR``: one module command over a cohort of studies, on local worker processes
or on an existing Dask cluster, resumable, with one combined report.

- :mod:`scanai.batch.manifest`: the manifest CSV (one study per row) -> each study's command line;
- :mod:`scanai.batch.runner`: the studies on Dask workers (retries, skips of completed studies, records);
- :mod:`scanai.batch.report`: the combined ``report.csv`` and its summary figure;
- :mod:`scanai.batch.cli`: the ``scanai batch`` sub-command.

The package does not import :mod:`scanai.cli`: the dispatcher hands it the parser of each command and the function
that runs one command (``scanai.cli.main``), which the workers import by name.
"""
