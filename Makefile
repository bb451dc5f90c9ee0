# make demo | make test | make bench | make table1 ITERS=300
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
ITERS ?= 300
DATASET ?= mnist_5k
TABLE1 := results/table1_$(DATASET)_$(ITERS)
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
	$(BIN)/python -m pytest -q -n logical --maxprocesses 4 --durations=15

# The paper's Table 1 protocol: joint on 5 and 10 classes, SFT, JTR and RA over 10
# tasks, --test on each, then report.py. ITERS shortens every run (the paper: 4001
# per task, joint 10x); joint gets ITERS per class. Rerunning continues (--resume).
table1: $(STAMP)
	$(BIN)/python joint.py --dataset $(DATASET) --classes 5 --iters $$(( $(ITERS) * 5 )) --result_path $(TABLE1)/joint_5 --resume
	$(BIN)/python joint.py --dataset $(DATASET) --classes 10 --iters $$(( $(ITERS) * 10 )) --result_path $(TABLE1)/joint_10 --resume
	$(BIN)/python main.py --dataset $(DATASET) --iters $(ITERS) --result_path $(TABLE1)/sft --resume
	$(BIN)/python main.py --dataset $(DATASET) --RA --iters $(ITERS) --result_path $(TABLE1)/ra --resume
	$(BIN)/python main.py --dataset $(DATASET) --JTR --iters $(ITERS) --result_path $(TABLE1)/jtr --resume
	for run in joint_5 joint_10; do $(BIN)/python joint.py --dataset $(DATASET) --test --result_path $(TABLE1)/$$run || exit 1; done
	for run in sft ra jtr; do $(BIN)/python main.py --dataset $(DATASET) --test --result_path $(TABLE1)/$$run || exit 1; done
	$(BIN)/python report.py $(TABLE1)/joint_5 $(TABLE1)/joint_10 $(TABLE1)/sft $(TABLE1)/ra $(TABLE1)/jtr --out $(TABLE1)/report.png | tee $(TABLE1)/report.md

# make reproduce [DATASET=mnist_5k] [ITERS=1000] [TASKS=10] [RUNS="sft ra"] [TEST_FLAGS="..."]:
# each run of the Table 1 protocol (joint_5, joint_10, sft, ewc, dgr, jtr, ra) that has no
# reproduction/<DATASET>_<ITERS>/<run>/results.json yet is trained (--resume) into
# results/reproduce_<DATASET>_<ITERS>/<run>, tested and summarised into reproduction/; then
# reproduction/report.md and its figures are made again. See reproduce.py.
.PHONY: reproduce
reproduce: ITERS = 1000
reproduce: TASKS ?= 10
reproduce: $(STAMP)
	$(BIN)/python reproduce.py protocol --dataset $(DATASET) --iters $(ITERS) --tasks $(TASKS) \
		$(if $(RUNS),--runs $(RUNS)) $(if $(TEST_FLAGS),--test_flags="$(TEST_FLAGS)")

bench: $(STAMP)
	$(BIN)/python bench.py

clean-venv:
	rm -rf $(VENV)
