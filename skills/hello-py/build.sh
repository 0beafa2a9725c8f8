#!/usr/bin/env bash
# Builds skills/hello-py into a pinned skill directory:
#   bash skills/hello-py/build.sh OUT-DIR [SKILLBOX]
# componentize-py (PyPI) compiles app.py against wit/ (world `skill`) into one
# component; `skillbox build --component` pins its sha256 into OUT-DIR/skill.toml.
# componentize-py is installed into a virtualenv under ~/.cache/skillbox if it
# is not on PATH.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
out=${1:?usage: build.sh OUT-DIR [SKILLBOX]}
skillbox=${2:-skillbox}
version=0.25.1
if ! command -v componentize-py >/dev/null; then
    venv=${XDG_CACHE_HOME:-$HOME/.cache}/skillbox/componentize-py-$version
    if [[ ! -x $venv/bin/componentize-py ]]; then
        echo "==> installing componentize-py $version into $venv" >&2
        python3 -m venv "$venv" >&2
        "$venv/bin/pip" install --quiet --disable-pip-version-check "componentize-py==$version" >&2
    fi
    PATH=$venv/bin:$PATH
fi
mkdir -p "$out"
wasm=$(mktemp -d)/hello_py.wasm
(cd "$here" && componentize-py -d ../../wit -w skill componentize app -o "$wasm" >&2)
"$skillbox" build "$here" --component "$wasm" --out "$out"
rm -f "$wasm"
