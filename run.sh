#!/usr/bin/env bash
# One entry point for a fresh machine: creates the environment (idempotent), then runs a job.
#   ./run.sh demo     set up, then score the example dump with the embedded default model
#   ./run.sh test     set up, then run the test suite (what CI runs)
#   ./run.sh setup    set up only
#   ./run.sh -- ARGS  set up, then run `moderation ARGS`
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

VENV="${MODERATION_VENV:-.venv}"
PY="${PYTHON:-python3}"

setup() {
  if [ ! -x "$VENV/bin/python" ]; then
    echo "[setup] creating virtual environment in $VENV" >&2
    "$PY" -m venv "$VENV"
  fi
  if [ ! -x "$VENV/bin/uv" ]; then
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check uv
  fi
  # Re-install only when the dependency list changed. torch and torchvision are resolved together from
  # the registry (one consistent build); never mixed with a separately installed torch.
  local stamp="$VENV/.moderation-installed" want
  want="$(cat pyproject.toml | sha256sum | cut -d' ' -f1)"
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ] || ! "$VENV/bin/python" -c "import moderation" 2>/dev/null; then
    echo "[setup] installing the project and its dependencies (first time: a few minutes)" >&2
    "$VENV/bin/uv" pip install --python "$VENV/bin/python" -q -e ".[all]"
    echo "$want" > "$stamp"
  fi
}

cmd="${1:-demo}"
[ $# -gt 0 ] && shift
case "$cmd" in
  setup) setup ;;
  demo)  setup; exec "$VENV/bin/moderation" demo "$@" ;;
  test)  setup; exec "$VENV/bin/python" -m pytest -q "$@" ;;
  --)    setup; exec "$VENV/bin/moderation" "$@" ;;
  *) echo "usage: ./run.sh [demo|test|setup|-- MODERATION_ARGS...]" >&2; exit 2 ;;
esac
