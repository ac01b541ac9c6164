#!/usr/bin/env bash
# Install Debian's `chromium` for the browser test when it is missing: non-interactive and quiet, only as root or
# with password-less sudo (never prompts). Exit 0 when chromium is on PATH afterwards, 1 otherwise.
# Playwright's own browser download is not used (`playwright install` needs a CDN that is not reachable here).
set -uo pipefail
command -v chromium >/dev/null && exit 0
if [ "$(id -u)" = 0 ]; then SUDO=; elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then SUDO="sudo -n"; else
  echo "chromium is missing and we are neither root nor allowed password-less sudo: apt-get install chromium" >&2; exit 1; fi
if ! command -v apt-get >/dev/null; then echo "chromium is missing and there is no apt-get: install Chromium and put it on PATH" >&2; exit 1; fi
echo "installing chromium (apt-get)"
start=$(date +%s)
$SUDO apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq -o DPkg::Lock::Timeout=300 chromium >/dev/null 2>&1 \
  || { echo "apt-get install chromium failed" >&2; exit 1; }
command -v chromium >/dev/null || { echo "chromium installed but not on PATH" >&2; exit 1; }
echo "$(chromium --version 2>/dev/null) installed in $(( $(date +%s) - start ))s"
