# edge-gateway: build, demo, tests, benchmarks. Run `make help`.
SHELL := /bin/bash
SWIFT ?= swift
# prometheus brings promtool (alert rule tests), chromium the browser for the monitor page's tests,
# libcurl4-openssl-dev the libcurl.so that the static edge-monitor (Foundation's URLSession) links.
APT_PACKAGES := pkg-config libmodbus-dev libmosquitto-dev libssl-dev libsqlite3-dev sqlite3 \
                mosquitto mosquitto-clients socat openssl iproute2 procps \
                prometheus chromium libcurl4-openssl-dev \
                systemd wireguard-tools wireguard-go python3 python3-cryptography \
                debootstrap systemd-container \
                rabbitmq-server activemq libmqtt-client-java \
                protobuf-compiler python3-protobuf python3-paho-mqtt python3-venv \
                strace

.PHONY: help deps build release package demo test bench clean

help:
	@echo "make demo   - local broker + simulated device + gateway, prints what is published (Ctrl-C stops all)"
	@echo "make test   - install what the tests need and run the whole suite"
	@echo "make bench  - benchmarks with figures and ratios against in-run baselines"
	@echo "make build  - debug build; make release - optimised build"
	@echo "make package - static release binaries and the Debian packages (edge-gateway, edge-monitor) in .build/deploy/"

# Installs the Debian packages the build, the demo and the tests need (only the missing ones).
deps:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing: $$missing"; \
	  SUDO=$$([ "$$(id -u)" -eq 0 ] || echo sudo); \
	  policy=/usr/sbin/policy-rc.d; made_policy=; \
	  if [ ! -e $$policy ]; then printf '#!/bin/sh\nexit 101\n' | $$SUDO tee $$policy >/dev/null && $$SUDO chmod 755 $$policy && made_policy=1; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing; \
	  status=$$?; [ -n "$$made_policy" ] && $$SUDO rm -f $$policy; \
	  if [ -d /run/systemd/system ]; then $$SUDO systemctl disable --now rabbitmq-server epmd.socket epmd.service 2>/dev/null || true; fi; \
	  [ $$status -eq 0 ] || exit $$status; \
	fi
	@# rabbitmq-server's postinst would start a node (and epmd) listening on every
	@# address: the policy-rc.d above (exit 101) keeps it from starting, and the unit is
	@# disabled after. The interop tests start their own node on loopback.
	@# activemq enables no instance, so its init script starts nothing; its MQTT transport
	@# needs libmqtt-client-java's jars, which the ActiveMQ interop test puts on its own path.
	@# The sealing tests cross-check AES-GCM against Python's cryptography package:
	@# Debian's python3-cryptography above (never pip into the system Python).
	@# The Sparkplug tests decode with pysparkplug (PyPI) from a venv of its own, with
	@# Debian's python3-protobuf on protoc's compile of proto/sparkplug_b.proto, and with
	@# mqtt-spb-wrapper (PyPI) from a second venv (it pins an older protobuf than pysparkplug's).
	@[ -x .build/venv/bin/python ] && .build/venv/bin/python -c 'import pysparkplug' 2>/dev/null || { \
	  python3 -m venv .build/venv && .build/venv/bin/python -m pip install -q 'pysparkplug==0.6.1'; }
	@[ -x .build/venv-spb/bin/python ] && .build/venv-spb/bin/python -c 'import mqtt_spb_wrapper' 2>/dev/null || { \
	  python3 -m venv .build/venv-spb && .build/venv-spb/bin/python -m pip install -q 'mqtt-spb-wrapper==2.1.2'; }

build: deps
	$(SWIFT) build

release: deps
	$(SWIFT) build -c release

demo: build
	bash scripts/demo.sh

# The Debian package from a static release build (deploy/build-deb.sh); the test
# suite installs it into a throwaway root (PackageInstallTests) and boots it under
# systemd (SystemdBootTests).
package: deps
	SWIFT=$(SWIFT) deploy/build-deb.sh

test: deps package
	$(SWIFT) build --build-tests
	# One test at a time: the integration suites start brokers, gateways, RabbitMQ and a
	# browser, and Swift Testing would run all of them at once on a 2-core machine.
	$(SWIFT) test --skip-build --no-parallel

# Figures and ratios against baselines measured in the same run (release build).
# per-message compares with modpoll (PyPI) from a venv of its own. rss measures the
# shipped binary too (deploy/build-release.sh → .build/deploy/edge-gateway), built in
# .build-static: the first time one more full release build (6–12 min on a loaded 2-core
# machine), then incremental (seconds); the plain release build stays in .build.
bench: deps
	@[ -x .build/venv-modpoll/bin/modpoll ] || { \
	  python3 -m venv .build/venv-modpoll && .build/venv-modpoll/bin/pip install -q 'modpoll==1.6.0' 'pymodbus==3.9.2'; }
	SCRATCH=.build-static SWIFT=$(SWIFT) deploy/build-release.sh >/dev/null
	$(SWIFT) build -c release
	.build/release/edge-gateway-bench

clean:
	rm -rf .build .build-static state
