#!/usr/bin/env python
"""Run Molecule scenarios, several at a time, and record how long each step of each took.

    run_molecule.py [--jobs N] [--timings FILE] [--logs DIR] SCENARIO...

Each scenario runs `molecule test -s SCENARIO` (its whole test sequence, destroy included)
with its output in DIR/SCENARIO.log. Scenarios are started in the order given, at most N at
once: list the longest first. Most of a scenario's time is spent waiting (on docker exec, on
services becoming healthy), so two or three side by side finish sooner than one after the
other on two cores. With one job the output is also streamed to the terminal.

For every scenario one row is appended to FILE: its steps' seconds (from Molecule's own
"➜ STEP: Executing" / "Executed" lines) and its total, e.g.
    molecule docker            create=7 prepare=4 check=9 converge=39 ... destroy=6  183s
Exits 1 when any scenario failed, after printing the end of each failed scenario's log.
"""
import argparse
import concurrent.futures
import os
import re
import subprocess
import sys
import threading
import time

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
STEP = re.compile(r"(?P<scenario>\S+) ➜ (?P<step>[a-z_]+): (?P<what>Executing|Executed)")
ORDER = ["destroy", "syntax", "create", "prepare", "check", "converge", "idempotence", "side_effect",
         "verify", "cleanup"]
TAIL_LINES = 200
print_lock = threading.Lock()


def say(text):
    with print_lock:
        print(text, flush=True)


def step_times(lines_with_times):
    """{step: seconds} from (monotonic time, line) pairs; a step that runs twice (destroy, at
    the start and at the end) is summed."""
    started, spent = {}, {}
    for when, line in lines_with_times:
        found = STEP.search(line)
        if not found:
            continue
        step = found["step"]
        if found["what"] == "Executing":
            started[step] = when
        elif step in started:
            spent[step] = spent.get(step, 0.0) + when - started.pop(step)
    return spent


def format_row(scenario, spent, total):
    steps = sorted(spent, key=lambda s: ORDER.index(s) if s in ORDER else len(ORDER))
    detail = " ".join(f"{step}={round(spent[step])}" for step in steps)
    return f"{'molecule ' + scenario:<36} {detail}  {round(total)}s"


def run_scenario(scenario, logs, stream):
    log_path = os.path.join(logs, f"{scenario}.log")
    start = time.monotonic()
    timed = []
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with open(log_path, "w", encoding="utf-8") as log:
        proc = subprocess.Popen(["molecule", "test", "-s", scenario], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                text=True, errors="replace")
        for line in proc.stdout:
            log.write(line)
            timed.append((time.monotonic(), ANSI.sub("", line)))
            if stream:
                sys.stdout.write(line)
        proc.wait()
    total = time.monotonic() - start
    return proc.returncode, step_times(timed), total, log_path


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--timings", default="build/timings.txt")
    parser.add_argument("--logs", default="build/molecule")
    parser.add_argument("scenarios", nargs="+")
    args = parser.parse_args()
    if args.jobs < 1:
        parser.error(f"--jobs must be at least 1, got {args.jobs}")
    os.makedirs(args.logs, exist_ok=True)
    stream = args.jobs == 1 or len(args.scenarios) == 1

    def one(scenario):
        say(f"[molecule] {scenario}: started (log: {args.logs}/{scenario}.log)")
        rc, spent, total, log_path = run_scenario(scenario, args.logs, stream)
        row = format_row(scenario, spent, total)
        with print_lock:
            with open(args.timings, "a", encoding="utf-8") as timings:
                timings.write(row + "\n")
            print(f"[molecule] {scenario}: {'passed' if rc == 0 else f'FAILED (exit {rc})'} in {round(total)} s",
                  flush=True)
        return scenario, rc, log_path

    with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
        results = list(pool.map(one, args.scenarios))
    failed = [(scenario, log_path) for scenario, rc, log_path in results if rc != 0]
    if not stream:
        for scenario, log_path in failed:
            with open(log_path, encoding="utf-8", errors="replace") as log:
                tail = log.readlines()[-TAIL_LINES:]
            say(f"\n===== the last {len(tail)} lines of {log_path} =====\n" + "".join(tail))
    if failed:
        say("[molecule] failed: " + " ".join(scenario for scenario, dummy in failed))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
