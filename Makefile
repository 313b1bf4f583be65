# mmsk: the two commands of README.md, and the set-up they share.
VENV ?= .venv
PY := $(VENV)/bin/python
CONFIG ?= configs/sknet/sknet18-cifar_1xb64_mnist5k.py
PYTEST_ARGS ?=
# pytest-xdist workers of `make test`; TEST_WORKERS=0 runs the suite in this
# process, one test after the other.
TEST_WORKERS ?= 2
# RESUME=1: `make main` continues the run that stopped in its work dir.
RESUME ?=

.PHONY: setup main test

setup:
	bash tools/setup_env.sh

# Train and test a backbone end to end on the built-in data set.
main: setup
	PYTHON=$(PY) bash tools/main_job.sh $(if $(RESUME),--resume) $(CONFIG)

# The test suite.
test: setup
	$(PY) -m pytest tests -n $(TEST_WORKERS) --dist worksteal $(PYTEST_ARGS)
