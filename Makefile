# make demo | make test | make bench | make table1 ITERS=300
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
ITERS ?= 300
DEMO := results/demo_mnist_5k_ra

.PHONY: demo test bench table1 clean-venv

$(STAMP): requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python main.py --dataset mnist_5k --RA --iters 250 --num_tasks 3 --result_path $(DEMO) --overwrite
	$(BIN)/python main.py --dataset mnist_5k --test --result_path $(DEMO) --eval_samples 640
	@echo "sample grids: $(DEMO)/samples and $(DEMO)/test; metrics: $(DEMO)/results.json"

test: $(STAMP)
	$(BIN)/python -m pytest tests -q

clean-venv:
	rm -rf $(VENV)
