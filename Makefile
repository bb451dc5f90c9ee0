# make demo | make test | make bench | make reproduce
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DATASET ?= mnist_5k
DEMO := results/demo_mnist_5k_ra

.PHONY: demo test bench table1 clean-venv

$(STAMP): requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python main.py --dataset mnist_5k --RA --iters 500 --num_tasks 2 --result_path $(DEMO) --overwrite
	$(BIN)/python main.py --dataset mnist_5k --test --result_path $(DEMO) --eval_samples 640
	@echo "sample grids: $(DEMO)/samples and $(DEMO)/test; metrics: $(DEMO)/results.json"

test: $(STAMP)
	$(BIN)/python -m pytest -q -n logical --maxprocesses 4 --dist worksteal --durations=40

# make reproduce [DATASET=mnist_5k] [ITERS=1000] [TASKS=10] [RUNS="sft ra"] [SEEDS="0 1 2"]
#                [PRECISION=mixed_bfloat16] [TEST_FLAGS="..."]:
# each run of the Table 1 protocol (joint_5, joint_10, sft, ewc, dgr, jtr, ra) that has no
# reproduction/<DATASET>_<ITERS>/<run>/results.json yet is trained (--resume) into
# results/reproduce_<DATASET>_<ITERS>/<run>, tested and summarised into reproduction/; then
# reproduction/report.md and its figures are made again. See reproduce.py.
.PHONY: reproduce
reproduce: ITERS = 1000
reproduce: TASKS ?= 10
reproduce: $(STAMP)
	$(BIN)/python reproduce.py protocol --dataset $(DATASET) --iters $(ITERS) --tasks $(TASKS) \
		$(if $(RUNS),--runs $(RUNS)) $(if $(SEEDS),--seeds $(SEEDS)) \
		$(if $(PRECISION),--precision $(PRECISION)) $(if $(TEST_FLAGS),--test_flags="$(TEST_FLAGS)")

# The former name of `make reproduce`.
table1: reproduce

bench: $(STAMP)
	$(BIN)/python bench.py

clean-venv:
	rm -rf $(VENV)
