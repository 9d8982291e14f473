#!/usr/bin/env bash
# Installs and starts, on loopback only, the real services the integration tests use.
set -euo pipefail
echo "services: none needed yet"
