#!/usr/bin/env python3
"""Many greedy completions against a podserve router while the network misbehaves.

Usage: fault_client.py HOST:PORT NUM_REQUESTS CONCURRENCY REPORT_JSON

First sends each of a few distinct prompts once (the reference, before any fault: the caller
starts its faults once REPORT_JSON.started exists), then NUM_REQUESTS requests, CONCURRENCY at a
time, each one of those prompts (greedy, max_tokens 8; odd ones streamed). Every answer is
classified:
  ok     200 with the prompt's reference tokens (a transfer that failed and fell back to a prefill
         on the decode instance must not change them);
  error  an error the client can read: a non-200 status with a JSON body carrying "error", or a
         stream that carries an error event and then ends with `data: [DONE]`;
  bad    anything else: other tokens, a reset or timed-out connection, a stream without [DONE],
         an error body that is not JSON.
Writes {"ok": N, "error": N, "bad": N, "statuses": {...}, "bad_examples": [...]} to REPORT_JSON.
Exit status: 0 when no answer was bad, 1 otherwise.
"""
import collections
import http.client
import json
import random
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

MAX_TOKENS = 8
NUM_PROMPTS = 16
SEED = 29


def prompts():
    rng = random.Random(SEED)
    return [[rng.randrange(256) for _ in range(rng.randrange(1, 161))] for _ in range(NUM_PROMPTS)]


def send(address, prompt, stream):
    """(status, body text); raises on a connection that breaks or times out."""
    host, port = address.rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=60)
    try:
        body = {"prompt": prompt, "max_tokens": MAX_TOKENS, "temperature": 0, "ignore_eos": True,
                "stream": stream}
        connection.request("POST", "/v1/completions", json.dumps(body),
                           {"Content-Type": "application/json"})
        response = connection.getresponse()
        return response.status, response.read().decode()
    finally:
        connection.close()


def classify(status, text, stream, reference):
    """("ok" | "error" | "bad", reason)."""
    if status != 200:
        try:
            readable = "error" in json.loads(text)
        except ValueError:
            readable = False
        return ("error", f"HTTP {status}") if readable else ("bad", f"HTTP {status}: {text!r}")
    if not stream:
        ids = json.loads(text)["choices"][0]["token_ids"]
        return ("ok", "") if ids == reference else ("bad", f"tokens {ids}, expected {reference}")
    ids, errors, done = [], [], False
    for line in text.splitlines():
        if line == "data: [DONE]":
            done = True
        elif line.startswith("data: {"):
            event = json.loads(line[len("data: "):])
            if "error" in event:
                errors.append(event["error"])
            else:
                ids += event["choices"][0]["token_ids"]
    if not done:
        return "bad", f"stream without [DONE]: {text!r}"
    if errors:
        return "error", f"stream error event: {errors[0]}"
    return ("ok", "") if ids == reference else ("bad", f"tokens {ids}, expected {reference}")


def main():
    address, num_requests, concurrency, report_path = (
        sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
    all_prompts = prompts()
    reference = []
    for prompt in all_prompts:
        status, text = send(address, prompt, stream=False)
        if status != 200:
            sys.exit(f"reference request failed before any fault: HTTP {status}: {text}")
        reference.append(json.loads(text)["choices"][0]["token_ids"])
    open(report_path + ".started", "w").close()

    counts = collections.Counter()
    statuses = collections.Counter()
    bad_examples = []
    lock = threading.Lock()

    def run(index):
        which = index % NUM_PROMPTS
        stream = index % 2 == 1
        try:
            status, text = send(address, all_prompts[which], stream)
            kind, reason = classify(status, text, stream, reference[which])
        except Exception as error:  # a broken or timed-out connection is a bad answer
            status, kind, reason = "no answer", "bad", repr(error)
        with lock:
            counts[kind] += 1
            statuses[str(status)] += 1
            if kind == "bad" and len(bad_examples) < 10:
                bad_examples.append(f"request {index} (prompt {which}, stream {stream}): {reason}")

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        list(pool.map(run, range(num_requests)))
    report = {"ok": counts["ok"], "error": counts["error"], "bad": counts["bad"],
              "statuses": dict(statuses), "bad_examples": bad_examples}
    with open(report_path, "w") as output:
        json.dump(report, output)
    print(json.dumps(report))
    return 1 if counts["bad"] else 0


if __name__ == "__main__":
    sys.exit(main())
