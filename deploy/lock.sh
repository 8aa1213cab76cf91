#!/bin/sh
# Regenerate the container's lock files from pyproject.toml, with hashes:
#   requirements.lock        the runtime dependencies with the cluster and
#                            postgres extras (installed with --require-hashes),
#                            and deploy/lock-extra.in
#   requirements-build.lock  the build backend (setuptools, wheel) for the
#                            project's own wheel
# Run from anywhere: sh deploy/lock.sh. pip-tools goes into a throwaway venv;
# the resolution uses PyPI alone, ignoring any local pip configuration, so the
# hashes are those of the published files. Add --upgrade to move every pin to
# the newest release; without it the existing pins are kept where they fit.
set -eu
cd "$(dirname "$0")/.."
PIP_TOOLS_VERSION=7.6.2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT INT TERM
python3 -m venv "$work/venv"
export PIP_CONFIG_FILE=/dev/null CUSTOM_COMPILE_COMMAND="sh deploy/lock.sh"
unset PIP_FIND_LINKS PIP_EXTRA_INDEX_URL PIP_INDEX_URL 2>/dev/null || true
"$work/venv/bin/pip" install --quiet --index-url https://pypi.org/simple \
    "pip-tools==$PIP_TOOLS_VERSION"
compile() {
    "$work/venv/bin/pip-compile" --quiet --generate-hashes --strip-extras \
        --index-url https://pypi.org/simple --no-emit-index-url "$@"
}
compile --extra cluster --extra postgres --output-file requirements.lock "$@" \
    pyproject.toml deploy/lock-extra.in
compile --all-build-deps --only-build-deps --allow-unsafe \
    --output-file requirements-build.lock "$@" pyproject.toml
