# The two commands of the README: `make run` and `make test`.
# Both create .venv on first use; the install is redone only when pyproject.toml changes.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
CONFIG ?= configs/quickstart.yaml
OUT    ?= results/quickstart
JOBS   ?= 2

.PHONY: run test test-all list clean-venv browser

$(BIN)/python:
	$(PYTHON) -c 'import sys; sys.exit("Python >= 3.10 is required, found " + sys.version.split()[0]) if sys.version_info < (3, 10) else None'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test,ray]'
	touch $(VENV)/.installed $@

run: $(VENV)/.installed
	$(BIN)/clbench run $(CONFIG) --out $(OUT) --jobs $(JOBS); status=$$?; \
	$(BIN)/clbench report $(OUT) > /dev/null && echo "report: $(OUT)/report.html, $(OUT)/report.md"; exit $$status

# The HTML report test drives a real browser: Debian's chromium, installed where we can.
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) ; } || \
	  echo "note: chromium is not installed; the browser test of the HTML report will be skipped"

test: $(VENV)/.installed-test browser
	$(BIN)/python -m pytest

test-all: $(VENV)/.installed-test browser
	$(BIN)/python -m pytest -m ''

list: $(VENV)/.installed
	$(BIN)/clbench list

clean-venv:
	rm -rf $(VENV)
