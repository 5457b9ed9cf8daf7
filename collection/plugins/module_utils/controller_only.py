# Copyright: imgbuild authors
# SPDX-License-Identifier: MIT
"""The body every imgbuild.guests module has: its work is done by its action plugin on the controller, so a module
that runs on a host (the collection missing on the controller) fails, saying so."""
from __future__ import annotations

import json
import sys


def refuse(module: str) -> None:
    print(json.dumps({"failed": True, "msg": f"imgbuild.guests.{module} runs on the controller through its action "
                      "plugin; it was executed on a host instead (is the collection installed on the controller?)"}))
    sys.exit(1)
