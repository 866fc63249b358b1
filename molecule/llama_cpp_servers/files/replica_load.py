#!/usr/bin/env python
"""Continuous completions against replicas of one tier, failing over like the backend does.

Each request goes to the next replica in turn; when it fails (refused, reset, timeout, 5xx)
it is retried once on the other replicas. A request is lost only when every replica failed.
Runs until STOP_FILE exists or --max-seconds pass, then writes a JSON summary.
Usage: replica_load.py --key KEY --out FILE --stop-file FILE URL [URL ...]
"""
import argparse
import json
import os
import time
import urllib.error
import urllib.request


def complete(url, key, timeout):
    body = json.dumps({"prompt": "hello", "max_tokens": 4}).encode()
    request = urllib.request.Request(url + "/v1/completions", data=body, headers={
        "Content-Type": "application/json", "Authorization": "Bearer " + key})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        answer = json.load(response)
    if not answer.get("choices"):
        raise ValueError("no choices in %r" % answer)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("urls", nargs="+")
    parser.add_argument("--key", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--stop-file", required=True)
    parser.add_argument("--max-seconds", type=float, default=300)
    parser.add_argument("--timeout", type=float, default=10)
    args = parser.parse_args()

    stats = {"requests": 0, "succeeded": 0, "failovers": 0, "lost": 0, "errors": [],
             "served_by": {url: 0 for url in args.urls}}
    deadline = time.monotonic() + args.max_seconds
    turn = 0
    while time.monotonic() < deadline and not os.path.exists(args.stop_file):
        stats["requests"] += 1
        order = args.urls[turn % len(args.urls):] + args.urls[:turn % len(args.urls)]
        turn += 1
        for attempt, url in enumerate(order):
            try:
                complete(url, args.key, args.timeout)
            except (OSError, ValueError, urllib.error.URLError) as exc:
                if len(stats["errors"]) < 20:
                    stats["errors"].append("%s: %s" % (url, exc))
                continue
            stats["succeeded"] += 1
            stats["served_by"][url] += 1
            stats["failovers"] += 1 if attempt else 0
            break
        else:
            stats["lost"] += 1
        time.sleep(0.02)
    with open(args.out + ".tmp", "w") as out:
        json.dump(stats, out)
    os.rename(args.out + ".tmp", args.out)


if __name__ == "__main__":
    main()
