# Targets: demo (the main job on the embedded synthetic data), test (lint, unit tests, notebooks).
# Uses the project's .venv when it exists (see README), else python3 from PATH.
PYTHON ?= $(if $(wildcard .venv/bin/python),.venv/bin/python,python3)
NOTEBOOKS := $(wildcard notebooks/*.ipynb)

DEMO_PROFILE ?= demo

.PHONY: demo full test lint unit notebooks clean ipywidgets7 report test-report fresh-machine

# The main job on the embedded synthetic data: all eight notebooks under the demo profile, the report,
# and a summary of what was written where. `make full` does the same on real CUB (a GPU machine).
# DEMO_PROFILE=smoke runs the same pipeline in a minute or two (the fresh-machine check uses it).
demo:
	$(PYTHON) -m ddpm_lib notebooks --profile $(DEMO_PROFILE)
	@if command -v latexmk >/dev/null 2>&1; then $(MAKE) report PROFILE=$(DEMO_PROFILE); else \
		echo "latexmk not installed: no PDF (apt-get install texlive-latex-base texlive-latex-recommended latexmk lmodern)"; fi
	$(PYTHON) -m ddpm_lib summary --profile $(DEMO_PROFILE)

full:
	$(PYTHON) -m ddpm_lib notebooks --profile full
	$(MAKE) report PROFILE=full
	$(PYTHON) -m ddpm_lib summary --profile full

ifeq ($(DDPM_FRESH_MACHINE_INNER),)
test: lint ipywidgets7 unit notebooks test-report
ifeq ($(CI),true)
	$(MAKE) fresh-machine
endif
else
# Inside the fresh-machine check (tests/fresh_machine.py): lint and the unit tests but the slow ones,
# which the outer `make test` has run; the check then runs `make demo DEMO_PROFILE=smoke`, which
# executes every notebook and builds the report on the clean clone.
test: lint ipywidgets7 unit
endif

# The README's commands on a clean clone in a temporary folder (tests/fresh_machine.py); part of
# `make test` in CI, by hand elsewhere (it installs a second environment: ~10 minutes).
fresh-machine:
	$(PYTHON) tests/fresh_machine.py

lint:
	$(PYTHON) -m ruff check ddpm_lib tests benchmarks notebooks

unit:
	$(PYTHON) -m pytest tests $(if $(DDPM_FRESH_MACHINE_INNER),-m "not slow")

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

# The LaTeX report from the figures and tables notebook 06 points it at (report/generated/active.tex);
# `make report PROFILE=smoke` picks another profile's. Fails on a missing figure or an undefined reference.
LATEXMK := latexmk -pdf -interaction=nonstopmode -halt-on-error -Werror -g
report:
ifdef PROFILE
	@test -f report/generated/$(PROFILE)/settings.tex || \
		(echo "no report inputs for profile $(PROFILE): run notebook 06 under it first"; exit 1)
	printf '\\input{generated/$(PROFILE)/settings.tex}\n' > report/generated/active.tex
endif
	@test -f report/generated/active.tex || \
		(echo "report/generated/active.tex is missing: run notebook 06 first (make demo, make full or make test)"; exit 1)
	cd report && $(LATEXMK) main.tex
	@echo "report: report/main.pdf"

# In `make test`: the report from the smoke run; required in CI, skipped where TeX is not installed.
test-report:
	@if command -v latexmk >/dev/null 2>&1 || [ "$$CI" = "true" ]; then \
		$(MAKE) report PROFILE=smoke; else echo "latexmk not installed: report build skipped"; fi

clean:
	rm -rf runs .pytest_cache .ruff_cache
