# ricloud-server: `make run` starts the server on the embedded default; `make test` runs the suite.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PORT ?= 8000
# make run: no request rate limits (set them to try them: make run RICLOUD_RATE_LIMIT_KEY=10/minute);
# RICLOUD_DEMO_TOKEN=<16+ characters> fixes the demo key's token (manage.py demo).
RICLOUD_RATE_LIMIT_ORGANISATION ?=
RICLOUD_RATE_LIMIT_KEY ?=
# make run serves POST /_ricloud/reset (a test backend; README "Test-backend mode").
RICLOUD_RESET_ENABLED ?= 1
# make test talks to a real Postgres and Redis (CI and .ci/run set these; defaults: this machine's).
TEST_DATABASE_URL ?= $(or $(DATABASE_URL),postgres://root@127.0.0.1:5432/ricloud)
TEST_BROKER_URL ?= $(or $(CELERY_BROKER_URL),redis://127.0.0.1:6379/15)

.PHONY: run test lint install install-dev migrate bench clean

$(VENV)/.installed: requirements.txt requirements-runtime.txt requirements-embedded.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed requirements-dev.txt
	$(PY) -m pip install --quiet -r requirements-dev.txt
	# ricloud 3.2.0 pins click<8 (Celery needs click>=8.1); its API and storage code do not use click.
	$(PY) -m pip install --quiet --no-deps ricloud==3.2.0
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

migrate: install
	mkdir -p var
	$(PY) manage.py migrate --noinput -v 0

run: install
	$(PY) manage.py demo --migrate
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" WEB_PORT=$(PORT) PORT=$(PORT) RICLOUD_WEBHOOK_ALLOW_PRIVATE=1 \
		RICLOUD_LOG_FORMAT="$${RICLOUD_LOG_FORMAT:-text}" \
		RICLOUD_RATE_LIMIT_ORGANISATION="$(RICLOUD_RATE_LIMIT_ORGANISATION)" RICLOUD_RATE_LIMIT_KEY="$(RICLOUD_RATE_LIMIT_KEY)" \
		RICLOUD_RESET_ENABLED="$(RICLOUD_RESET_ENABLED)" \
		$(VENV)/bin/honcho start -f Procfile.dev

test: install-dev
	DATABASE_URL=$(TEST_DATABASE_URL) CELERY_BROKER_URL=$(TEST_BROKER_URL) $(PY) -m pytest -q $(PYTEST_ARGS)

lint: install-dev
	$(VENV)/bin/ruff check .

bench: install-dev
	DATABASE_URL=$(or $(BENCH_DATABASE_URL),postgres://root@127.0.0.1:5432/ricloud_bench) $(PY) bench/tasks_list.py

clean:
	rm -rf var $(VENV)
