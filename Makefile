# Targets: demo (the main job on the embedded synthetic data), test (lint, unit tests, notebooks).
# Uses the project's .venv when it exists (see README), else python3 from PATH.
PYTHON ?= $(if $(wildcard .venv/bin/python),.venv/bin/python,python3)
NOTEBOOKS := $(wildcard notebooks/*.ipynb)

.PHONY: demo test lint unit notebooks clean ipywidgets7

demo:
	$(PYTHON) -m ddpm_lib demo --profile demo

test: lint ipywidgets7 unit notebooks

lint:
	$(PYTHON) -m ruff check ddpm_lib tests

unit:
	$(PYTHON) -m pytest tests

# Colab's ipywidgets 7.7.1 beside the installed 8.x, for the explorer tests (tests/test_viz.py).
# A failed install (offline) only makes that one test skip.
ipywidgets7: .cache/ipywidgets7
.cache/ipywidgets7:
	-$(PYTHON) -m pip install -q --target $@ --no-deps ipywidgets==7.7.1 "widgetsnbextension~=3.6.0" \
		"jupyterlab_widgets<3" ipython_genutils

# Every notebook, in order, under the smoke profile (nbval runs each cell, fails on errors).
notebooks:
ifneq ($(NOTEBOOKS),)
	DDPM_PROFILE=smoke $(PYTHON) -m pytest --nbval-lax --nbval-current-env $(NOTEBOOKS)
else
	@echo "no notebooks yet: nothing to execute"
endif

clean:
	rm -rf runs .pytest_cache .ruff_cache
