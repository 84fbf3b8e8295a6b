"""Health check of the backend fake in compose.yaml: exit 0 when GET
/_fake/health on 127.0.0.1:<port> answers 200, else 1.

A script rather than `python3 -c "<code>"`: podman-compose and docker-compose v1
over podman split an exec-form health check on blanks, so no argument of the
check may contain one.

    python3 backend-healthcheck.py [PORT]     (default 8080)
"""
import sys
import urllib.request


def main(argv):
    port = int(argv[1]) if len(argv) > 1 else 8080
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/_fake/health", timeout=2) as r:
            return 0 if r.status == 200 else 1
    except (OSError, ValueError) as e:
        print(f"backend fake not healthy: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
