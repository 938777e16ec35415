# Two commands on a fresh machine: `make run` (the study) and `make test` (the tests).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: run test setup compare bench clean

setup: $(STAMP)

# torch/torchvision go in with plain pip first (a local wheel cache serves them here);
# then the package and its dev extras.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The reference study: every method over seeds 0-4 into one sweep folder, then the report.
# Jobs run in parallel, one per core (joblib); the seed varies fastest, so parallel jobs pretrain
# different seeds' baselines instead of waiting for one. resume=true: rerunning after an
# interruption redoes only the jobs that did not finish.
STUDY_DIR ?= outputs/multirun/reference_study
SEEDS     ?= 0,1,2,3,4
SWEEP      = $(PY) train.py -m hydra.sweep.dir=$(STUDY_DIR) resume=true

run: $(STAMP)
	$(SWEEP) method=sequential,joint retention=none,replay,ewc,lwf,l2sp,freeze seed=$(SEEDS)
	$(SWEEP) method=baseline,task_arithmetic,ties,dare,average seed=$(SEEDS)
	$(SWEEP) method=task_negation seed=$(SEEDS)
	$(PY) compare.py $(STUDY_DIR)

compare: $(STAMP)
	$(PY) compare.py $(STUDY_DIR)

test: $(STAMP)
	$(PY) -m pytest

bench: $(STAMP)
	$(PY) bench/bench_pipeline.py

clean:
	rm -rf outputs data/cache
