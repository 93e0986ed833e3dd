# pfbook: `make book` builds the book, `make test` runs the tests. Both set up .venv first.
#
# Variables you may override:  make book PYTHON=python3.12  TORCH='torch --index-url ...'
#   PYTHON  the interpreter that creates .venv
#   TORCH   the torch requirement installed before the package (choose your CPU/CUDA build);
#           empty (TORCH=) keeps whatever torch the package's dependencies pull in

SHELL   := /bin/bash
PYTHON  ?= python3
TORCH   ?= torch==2.13.0
VENV    := .venv
BIN     := $(VENV)/bin
# The install is redone only when pyproject.toml changes (or the stamp is deleted).
STAMP   := $(VENV)/.pfbook-install-stamp

.PHONY: book test lint install clean help
.DEFAULT_GOAL := help

help:
	@echo "make book   set up .venv, generate the chapters' data, build the book into _build/html"
	@echo "make test   set up .venv, run the tests and execute every chapter on the ci profile"
	@echo "make lint   ruff (lint and format check) and nbstripout --verify over the project"
	@echo "make clean  remove _build (keeps .venv, data and runs)"

install: $(STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(if $(strip $(TORCH)),$(BIN)/pip install '$(TORCH)')
	$(BIN)/pip install -e '.[book,test]'
	touch $@

book: $(STAMP)
	$(BIN)/pfbook data prepare --profile default
	PFBOOK_PROFILE=default $(BIN)/jupyter-book build . -W -n --keep-going
	@echo "The book is at _build/html/index.html"

test: $(STAMP)
	$(BIN)/pfbook data prepare --profile ci --no-progress
	PFBOOK_PROFILE=ci $(BIN)/python -m pytest -n 2 --dist loadfile --nbmake --nbmake-timeout=600 tests book

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/nbstripout --keep-id --verify book/*.ipynb

clean:
	rm -rf _build
