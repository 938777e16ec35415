# Two commands on a fresh machine: `make run` (the study) and `make test` (the tests).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: run split-mnist test setup compare bench clean

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
# Each retention method's strength knob is swept on a grid that brackets the choice (in the
# reference study no seed's choice lies on a grid edge but the limit points the report names);
# compare.py picks each knob per seed on the calibration (selection) part with the one selection
# rule (selection.rule, selection.delta), scores the best method on the estimation part and
# reports test numbers. Every random draw follows the seed (split, replay memory, Fisher subset,
# DARE masks). Jobs run in parallel, one per core (joblib); the seed varies fastest, so parallel
# jobs pretrain different seeds' baselines instead of waiting for one. resume=true: rerunning
# after an interruption redoes only the jobs that did not finish (or that other code computed).
STUDY_DIR ?= outputs/multirun/reference_study
SEEDS     ?= 0,1,2,3,4
SWEEP      = $(PY) train.py -m hydra.sweep.dir=$(STUDY_DIR) resume=true
FINETUNE   = $(SWEEP) method=sequential,joint

run: $(STAMP)
	$(SWEEP) method=baseline,sequential,joint,task_arithmetic,ties,dare,average seed=$(SEEDS)
	$(SWEEP) method=sequential method.reset_optimizer=false seed=$(SEEDS)
	$(FINETUNE) retention=ewc retention.lambda_=1,3,10,30,100,300 seed=$(SEEDS)
	$(FINETUNE) retention=l2sp retention.alpha=1,3,10,30,100 seed=$(SEEDS)
	$(FINETUNE) retention=lwf retention.alpha=0.3,1,3,10,30,100 seed=$(SEEDS)
	$(FINETUNE) retention=replay retention.memory_per_class=500 retention.replay_share=0.1,0.25,0.5,0.75,0.9,0.95 seed=$(SEEDS)
	$(FINETUNE) retention=freeze 'retention.trainable=[output],[1,output]' seed=$(SEEDS)
	$(SWEEP) method=task_negation seed=$(SEEDS)
	$(PY) compare.py $(STUDY_DIR)

# Split MNIST as published (van de Ven & Tolias 2019): 2000 iterations per task; see README.
SPLIT_DIR ?= outputs/multirun/split_mnist
split-mnist: $(STAMP)
	$(PY) train.py -m hydra.sweep.dir=$(SPLIT_DIR) resume=true experiment=split_mnist method=sequential retention=none,replay,ewc,lwf seed=0,1,2
	$(PY) train.py -m hydra.sweep.dir=$(SPLIT_DIR) resume=true experiment=split_mnist method=joint seed=0,1,2
	$(PY) compare.py $(SPLIT_DIR)

compare: $(STAMP)
	$(PY) compare.py $(STUDY_DIR)

test: $(STAMP)
	$(PY) -m pytest

bench: $(STAMP)
	$(PY) bench/bench_pipeline.py

clean:
	rm -rf outputs data/cache
