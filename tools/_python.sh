# Sourced by the tools' shell scripts: sets PYTHON to the interpreter to run,
# unless the environment gives one: the set-up's .venv when there is one
# (the README's set-up), else the python on PATH. Needs ROOT (the repository
# root).
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x "$ROOT/.venv/bin/python" ]]; then
        PYTHON="$ROOT/.venv/bin/python"
    else
        PYTHON=python
    fi
fi
