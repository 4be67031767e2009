"""Scoring samples: the evaluation method (``scoring.evaluate``), KID / FID through torch-fidelity
(``metrics``) and the species classifier (``classifier``). Runs are taken by their ``sample`` method,
so nothing here imports the training code or the wiring."""
