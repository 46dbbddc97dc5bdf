# Shared by scripts/test, scripts/demo, scripts/bench: make sure .venv exists and holds
# the project (editable) with its test extra; re-install only when pyproject.toml changed.
ensure_venv() {
  local py=${PYTHON:-python3}
  if [ ! -x .venv/bin/python ]; then
    echo "== creating .venv" >&2
    "$py" -m venv .venv
  fi
  PY=.venv/bin/python
  local stamp=.venv/.installed-$(sha1sum pyproject.toml | cut -c1-12)
  if [ ! -f "$stamp" ]; then
    echo "== installing the project and its test dependencies into .venv" >&2
    "$PY" -m pip install -q --upgrade pip >&2 || true
    "$PY" -m pip install -q -e ".[test]" >&2
    rm -f .venv/.installed-*
    touch "$stamp"
  fi
}
