#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Print the engine's C sources as src/meson.build lists them ('layer/file.c'),
one absolute path a line, so that tests/hostile can compile them again with
sanitizers.

Reading the list from src/meson.build (instead of copying it) keeps the
sanitized build in step with the layers as files are added or renamed; Meson
reconfigures whenever src/meson.build changes, which runs this again.
"""
import os
import re
import sys


def main():
    src = os.path.abspath(sys.argv[1])
    with open(os.path.join(src, "meson.build"), encoding="utf-8") as f:
        text = f.read()
    pat = re.compile(r"""['"]([A-Za-z0-9_\-]+/[A-Za-z0-9_.\-]+\.c)['"]""")
    seen = []
    for m in pat.finditer(text):
        path = os.path.join(src, m.group(1))
        if os.path.isfile(path) and path not in seen:
            seen.append(path)
    print("\n".join(seen))


if __name__ == "__main__":
    main()
