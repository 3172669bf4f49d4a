VENV   := .venv
CONFIG := config.example.yaml
ARGS   ?=

.PHONY: setup run test check clean

setup:
	bash scripts/setup.sh

run: setup
	$(VENV)/bin/errnomon --config.file=$(CONFIG) $(ARGS)

test:
	bash scripts/setup.sh --test
	$(VENV)/bin/python -m pytest -v -rs tests

check: setup
	$(VENV)/bin/errnomon --config.check --config.file=$(CONFIG)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
	find . -name __pycache__ -type d -prune -not -path './.git/*' -exec rm -rf {} +
