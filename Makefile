VENV   := .venv
CONFIG := config.example.yaml
ARGS   ?=

.PHONY: setup run test check clean image

setup:
	bash scripts/setup.sh

run: setup
	$(VENV)/bin/errnomon --config.file=$(CONFIG) $(ARGS)

test:
	bash scripts/setup.sh --test
	$(VENV)/bin/python -m pytest -v -rs tests

check: setup
	$(VENV)/bin/errnomon --config.check --config.file=$(CONFIG)

# Benchmarks (root): installs gcc, bpftrace, python3-matplotlib, nginx, wrk, redis if missing; results in bench/out/,
# docs/BENCHMARKS.md. Needs 2 CPUs and a quiet machine (no qemu guests). Options through BENCH_ARGS, e.g.
# make bench BENCH_ARGS='--only servers --server-rounds 15' (bench/run.py --help).
.PHONY: bench
bench: setup
	bash bench/setup.sh
	$(VENV)/bin/python bench/run.py $(BENCH_ARGS)

# The container image (root, mmdebstrap, podman; no base image pulled): deploy/image/build.sh, README
# "Running on Kubernetes". IMAGE=name:tag to choose the name.
IMAGE ?=
image:
	bash deploy/image/build.sh $(IMAGE)

# Kernel matrix (root): boots Debian/Ubuntu kernels under qemu and runs the BPF scenario tests inside
# (tests/kernels/, README "Kernel matrix"). Images are cached under /var/tmp/errnomon-kernels.
# One or more kernels from tests/kernels/kernels.txt: make test-kernels KERNELS="bookworm trixie".
KERNELS ?=
.PHONY: test-kernels
test-kernels:
	bash tests/kernels/setup.sh
	/usr/bin/python3 tests/kernels/run.py $(KERNELS)

# The send/recv cost of each rung of the hook ladder, inside the kernel-matrix guests (root, gcc; bench/ladder.py):
# bench/out/ladder.json and its section of docs/BENCHMARKS.md. make bench-kernels KERNELS=trixie LADDER_ARGS='--rounds 9'
LADDER_ARGS ?=
.PHONY: bench-kernels
bench-kernels:
	bash tests/kernels/setup.sh
	/usr/bin/python3 bench/ladder.py $(LADDER_ARGS) $(KERNELS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
	find . -name __pycache__ -type d -prune -not -path './.git/*' -exec rm -rf {} +

# Install as a systemd service under $(PREFIX), or remove it (scripts/install.sh; README "Running as a
# systemd service"). Both honour DESTDIR; 'make uninstall PURGE=1' also removes a modified config.
PREFIX  ?= /opt/errnomon
DESTDIR ?=
PURGE   ?= 0

.PHONY: install uninstall

install:
	DESTDIR="$(DESTDIR)" PREFIX="$(PREFIX)" bash scripts/install.sh install

uninstall:
	DESTDIR="$(DESTDIR)" PREFIX="$(PREFIX)" PURGE="$(PURGE)" bash scripts/install.sh uninstall
