# hushlight: `make demo` runs the night-street demo, `make test` runs every test.
# Both set themselves up: a .venv with the pinned dependencies, and Mosquitto
# from the system package manager when it is missing.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
SUDO   := $(shell [ "$$(id -u)" = "0" ] || echo sudo)

.PHONY: all demo test lint typecheck pytest bench venv mosquitto rabbitmq postgres chromium multilib micropython clean

all: test

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@echo "==> creating $(VENV) and installing hushlight with its pinned dependencies"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade "pip>=23.2"
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

mosquitto:
	@if command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ]; then \
		echo "==> mosquitto found"; \
	else \
		echo "==> installing mosquitto through apt-get"; \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -q && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q mosquitto mosquitto-clients; \
	fi

# The browser of tests/web (Playwright drives it; its own browser download is never used).
chromium:
	@if [ -x /usr/bin/chromium ]; then \
		echo "==> chromium found"; \
	else \
		echo "==> installing chromium through apt-get (for the browser tests)"; \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -q && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver; \
	fi

# The broker cluster of tests/cluster (tools/rabbit_cluster.py).  Installing the
# package also starts the system's RabbitMQ service; the cluster never uses it.
rabbitmq:
	@if [ -x /usr/lib/rabbitmq/bin/rabbitmq-server ]; then \
		echo "==> rabbitmq-server found"; \
	else \
		echo "==> installing rabbitmq-server through apt-get"; \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -q && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q rabbitmq-server; \
	fi

# The store gateways share (tests/gateway/test_lease*.py, test_storage_pg.py): a
# PostgreSQL server on 127.0.0.1:5432 that lets this user create databases without
# a password; installed and started when missing.  Tests of a server elsewhere set
# HUSHLIGHT_TEST_POSTGRES to a postgresql:// URL of a database to connect to first.
postgres:
	@if [ -n "$$HUSHLIGHT_TEST_POSTGRES" ] || pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then \
		echo "==> postgresql found"; \
	else \
		if ! command -v pg_ctlcluster >/dev/null 2>&1; then \
			echo "==> installing postgresql through apt-get"; \
			$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -q && \
			$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql; \
		fi; \
		echo "==> starting postgresql"; \
		$(SUDO) pg_ctlcluster --skip-systemctl-redirect $$(ls /etc/postgresql | tail -n 1) main start; \
	fi

# The ESP32 stand-in: MicroPython's unix port built 32-bit with single-precision
# floats (tools/upy_build.py), built once into build/micropython32/ and again
# only when its source or options change.  It needs gcc's 32-bit support.
multilib:
	@if printf 'int main(void){return 0;}' | gcc -m32 -x c -o /dev/null - 2>/dev/null; then \
		echo "==> gcc builds 32-bit programs"; \
	else \
		echo "==> installing gcc-multilib through apt-get (to build the 32-bit MicroPython)"; \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -q && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q build-essential gcc-multilib; \
	fi

micropython: $(STAMP) multilib
	@$(BIN)/python -m tools.upy_build

demo: $(STAMP) micropython
	$(BIN)/hushlight demo

lint: $(STAMP)
	$(BIN)/ruff check .
	@# the allowed imports between the parts ([tool.importlinter] in pyproject.toml);
	@# firmware/ on the path makes the sensor's package importable as `hushlight`
	PYTHONPATH=firmware $(BIN)/lint-imports --no-cache --no-logo
	$(BIN)/ruff format --check dsp protocol gateway tools tests hil_tests bench

typecheck: $(STAMP)
	$(BIN)/mypy
	@# the MicroPython stubs install as loose .pyi files mypy does not search: copy them (firmware/mypy.ini)
	@site=$$($(BIN)/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])') && \
		rm -rf build/mpy-stubs && mkdir -p build/mpy-stubs/typeshed/stubs && \
		cp $$site/*.pyi build/mpy-stubs/ && cp -r $$site/_mpy_shed build/mpy-stubs/ && \
		cp -r $$site/stdlib build/mpy-stubs/typeshed/ && \
		cp -r $$site/mypy/typeshed/stubs/mypy-extensions build/mpy-stubs/typeshed/stubs/
	$(BIN)/mypy --config-file firmware/mypy.ini firmware/hushlight protocol

pytest: $(STAMP) mosquitto rabbitmq postgres chromium micropython
	@# two workers: most tests wait on sensors playing audio and on brokers, not on the
	@# CPU; a module stays on one worker, the broker cluster's tests all on one (tests/conftest.py)
	$(BIN)/python -m pytest -n 2 --durations=15

test: lint typecheck pytest

bench: $(STAMP) mosquitto micropython
	$(BIN)/python bench/dsp.py
	$(BIN)/python bench/gateway.py
	$(BIN)/python bench/ota.py

clean:
	rm -rf $(VENV) build .pytest_cache .mypy_cache .ruff_cache
