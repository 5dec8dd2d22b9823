#!/usr/bin/env python3
"""Greedy completions of a fixed set of prompts, sent concurrently to a podserve router.

Usage: greedy_probe.py HOST:PORT OUTPUT_JSON

The prompts are token ids drawn with a fixed seed (the tiny model's byte vocabulary, 0..255), of
lengths around the KV page size (16) and beyond one prefill chunk; odd ones are streamed (SSE) and
even ones not, so both response paths are compared. Writes a JSON list with each prompt's output
token ids, in prompt order. Exit status: 0 when every request was answered with 200 and
MAX_TOKENS ids, 1 otherwise (each failure printed to stderr).
"""
import http.client
import json
import random
import sys
import threading

MAX_TOKENS = 12
PROMPT_LENGTHS = (1, 15, 16, 17, 40, 100, 130)
SEED = 13


def prompts():
    rng = random.Random(SEED)
    return [[rng.randrange(256) for _ in range(length)] for length in PROMPT_LENGTHS]


def complete(address, prompt, stream):
    """Returns the output token ids of one greedy completion; raises on any failure."""
    host, port = address.rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=120)
    body = {"prompt": prompt, "max_tokens": MAX_TOKENS, "temperature": 0, "ignore_eos": True,
            "stream": stream}
    connection.request("POST", "/v1/completions", json.dumps(body),
                       {"Content-Type": "application/json"})
    response = connection.getresponse()
    text = response.read().decode()
    connection.close()
    if response.status != 200:
        raise RuntimeError(f"HTTP {response.status}: {text}")
    if not stream:
        return json.loads(text)["choices"][0]["token_ids"]
    ids, done = [], False
    for line in text.splitlines():
        if line == "data: [DONE]":
            done = True
        elif line.startswith("data: {"):
            ids += json.loads(line[len("data: "):])["choices"][0]["token_ids"]
    if not done:
        raise RuntimeError(f"stream ended without [DONE]: {text!r}")
    return ids


def main():
    address, output_path = sys.argv[1], sys.argv[2]
    all_prompts = prompts()
    outputs = [None] * len(all_prompts)
    failures = []

    def run(index):
        try:
            ids = complete(address, all_prompts[index], stream=index % 2 == 1)
            if len(ids) != MAX_TOKENS:
                raise RuntimeError(f"{len(ids)} tokens, expected {MAX_TOKENS}: {ids}")
            outputs[index] = ids
        except Exception as error:  # every failure is reported, none ends the other requests
            failures.append(f"prompt {index} (length {len(all_prompts[index])}): {error}")

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(all_prompts))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with open(output_path, "w") as output:
        json.dump(outputs, output)
    for failure in failures:
        print(failure, file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
