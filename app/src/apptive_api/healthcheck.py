"""Docker HEALTHCHECK: `python -m apptive_api.healthcheck`; exit 0 only on a 200 from /health.

Kept free of the app's imports so that it starts fast every 2 s and needs no curl in the image.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

_WILDCARDS = {"", "0.0.0.0", "::"}


def main() -> int:
    host = os.environ.get("APPTIVE_HOST", "").strip()
    host = "127.0.0.1" if host in _WILDCARDS else host
    if ":" in host:
        host = f"[{host}]"
    port = os.environ.get("APPTIVE_PORT", "").strip() or "3600"
    url = f"http://{host}:{port}/health"
    try:
        with urllib.request.urlopen(url, timeout=1.8) as response:
            return 0 if response.status == 200 else 1
    except urllib.error.HTTPError as exc:
        print(f"healthcheck: {url} answered {exc.code}", file=sys.stderr)
    except OSError as exc:
        print(f"healthcheck: {url} failed: {exc}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
