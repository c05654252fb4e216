"""The image's health check: exit 0 when GET http://127.0.0.1:$MODELBENCH_PORT<path>
answers 200 within the timeout, else 1 with the reason on stderr.

    python /usr/local/bin/modelbench-healthcheck [/health | /ready]

/health (the default) says the process answers; /ready that its models are
loaded. The image has no curl; this needs only the standard library.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

TIMEOUT_S = 4.0  # under the HEALTHCHECK's --timeout


def main(argv: list[str]) -> int:
    path = argv[1] if len(argv) > 1 else "/health"
    url = f"http://127.0.0.1:{os.environ.get('MODELBENCH_PORT', '8000')}{path}"
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
            status = response.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except (OSError, ValueError) as exc:
        print(f"{url}: {exc}", file=sys.stderr)
        return 1
    if status != 200:
        print(f"{url}: HTTP {status}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
