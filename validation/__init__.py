"""Great Expectations gate over raw batches and training sets.

Importing this package is cheap: Great Expectations itself is imported only inside the
functions that need it (it takes seconds to import). Entry points:

- :func:`validation.gate.run_batch_checkpoint` (ingestion calls it after its contract checks)
- :func:`validation.gate.run_training_set_checkpoint` (training calls it before fitting)
- ``python -m validation --help`` (init the GX project, validate a batch directory, build/serve Data Docs)
"""
